//! The merged view a stack of layers must show: each layer's directory is scanned once and the
//! layers are applied bottom to top with overlayfs rules (upper entries win, whiteouts and
//! opaque directories hide lower entries).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    ops::Bound,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use super::{ExecutorError, layers::is_opaque};

/// Kind of one entry in a layer directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File {
        size: u64,
        uid: u32,
    },
    Dir {
        opaque: bool,
    },
    Symlink {
        target: PathBuf,
    },
    /// Character device 0/0: hides the same path in lower layers.
    Whiteout,
    /// Devices, fifos and sockets: checked for presence only.
    Special,
}

/// One entry of a scanned layer, with its path relative to the layer root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub path: PathBuf,
    pub kind: EntryKind,
}

/// Lists every entry under `root`, sorted by path.
pub(crate) fn scan_layer(root: &Path) -> Result<Vec<Entry>, ExecutorError> {
    let mut entries = Vec::new();
    scan_dir(root, Path::new(""), &mut entries)?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

fn scan_dir(root: &Path, relative: &Path, entries: &mut Vec<Entry>) -> Result<(), ExecutorError> {
    let dir = root.join(relative);
    let listing =
        fs::read_dir(&dir).map_err(|e| ExecutorError::io("list layer directory", &dir, e))?;
    for item in listing {
        let item = item.map_err(|e| ExecutorError::io("list layer directory", &dir, e))?;
        let path = relative.join(item.file_name());
        let full = root.join(&path);
        let meta = fs::symlink_metadata(&full).map_err(|e| ExecutorError::io("stat", &full, e))?;
        let file_type = meta.file_type();

        let kind = if file_type.is_dir() {
            EntryKind::Dir {
                opaque: is_opaque(&full),
            }
        } else if file_type.is_file() {
            EntryKind::File {
                size: meta.len(),
                uid: meta.uid(),
            }
        } else if file_type.is_symlink() {
            let target =
                fs::read_link(&full).map_err(|e| ExecutorError::io("read link", &full, e))?;
            EntryKind::Symlink { target }
        } else if file_type.is_char_device() && meta.rdev() == 0 {
            EntryKind::Whiteout
        } else {
            EntryKind::Special
        };

        let is_dir = matches!(kind, EntryKind::Dir { .. });
        entries.push(Entry {
            path: path.clone(),
            kind,
        });
        if is_dir {
            scan_dir(root, &path, entries)?;
        }
    }
    Ok(())
}

/// One entry of the merged view and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MergedEntry {
    pub kind: EntryKind,
    /// Index of the layer that provides it in the stack, 0 being the bottom.
    pub layer: usize,
    /// Whether it replaced an entry of a lower layer.
    pub overrides_lower: bool,
}

/// Expected content of the overlay of a stack of layers.
#[derive(Clone, Debug, Default)]
pub(crate) struct MergedView {
    pub entries: BTreeMap<PathBuf, MergedEntry>,
    /// Paths some layer provides that a whiteout or opaque directory above hides.
    pub hidden: BTreeSet<PathBuf>,
}

impl MergedView {
    /// Applies scanned layers bottom first.
    pub(crate) fn merge<'a>(layers: impl IntoIterator<Item = &'a [Entry]>) -> MergedView {
        let mut view = MergedView::default();
        for (index, entries) in layers.into_iter().enumerate() {
            view.apply(index, entries);
        }
        view.hidden.retain(|path| !view.entries.contains_key(path));
        view
    }

    fn apply(&mut self, layer: usize, entries: &[Entry]) {
        // Hiding comes first, so that the layer's own entries under an opaque directory stay.
        for entry in entries {
            match entry.kind {
                EntryKind::Whiteout => {
                    if self.entries.remove(&entry.path).is_some() {
                        self.hidden.insert(entry.path.clone());
                    }
                    self.remove_descendants(&entry.path);
                }
                EntryKind::Dir { opaque: true } => self.remove_descendants(&entry.path),
                _ => {}
            }
        }

        for entry in entries {
            if entry.kind == EntryKind::Whiteout {
                continue;
            }
            let previous = self.entries.get(&entry.path);
            let has_lower = previous.is_some();
            let lower_is_dir = matches!(
                previous,
                Some(MergedEntry {
                    kind: EntryKind::Dir { .. },
                    ..
                })
            );
            let is_dir = matches!(entry.kind, EntryKind::Dir { .. });
            if !is_dir && lower_is_dir {
                self.remove_descendants(&entry.path);
            }
            // A directory over a directory merges with it, so it overrides nothing.
            let overrides_lower = has_lower && !(is_dir && lower_is_dir);
            self.entries.insert(
                entry.path.clone(),
                MergedEntry {
                    kind: entry.kind.clone(),
                    layer,
                    overrides_lower,
                },
            );
        }
    }

    fn remove_descendants(&mut self, dir: &Path) {
        let descendants: Vec<PathBuf> = self
            .entries
            .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
            .map(|(path, _)| path)
            .take_while(|path| path.starts_with(dir))
            .cloned()
            .collect();
        for path in descendants {
            self.entries.remove(&path);
            self.hidden.insert(path);
        }
    }

    /// Names directly inside `dir` in the merged view.
    pub(crate) fn children(&self, dir: &Path) -> BTreeSet<PathBuf> {
        self.entries
            .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
            .map(|(path, _)| path)
            .take_while(|path| path.starts_with(dir))
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name().map(PathBuf::from))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File { size: 1, uid: 0 },
        }
    }

    fn dir(path: &str, opaque: bool) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Dir { opaque },
        }
    }

    fn whiteout(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Whiteout,
        }
    }

    #[test]
    fn merge_top_layer_wins() {
        let lower = vec![file("a")];
        let upper = vec![file("a")];
        let view = MergedView::merge([lower.as_slice(), upper.as_slice()]);
        assert_eq!(view.entries[Path::new("a")].layer, 1);
        assert!(view.entries[Path::new("a")].overrides_lower);
    }

    #[test]
    fn merge_whiteout_hides_lower_tree() {
        let lower = vec![dir("d", false), file("d/x"), file("keep")];
        let upper = vec![whiteout("d")];
        let view = MergedView::merge([lower.as_slice(), upper.as_slice()]);
        assert!(!view.entries.contains_key(Path::new("d")));
        assert!(!view.entries.contains_key(Path::new("d/x")));
        assert!(view.hidden.contains(Path::new("d/x")));
        assert!(view.entries.contains_key(Path::new("keep")));
    }

    #[test]
    fn merge_opaque_dir_keeps_own_entries() {
        let lower = vec![dir("o", false), file("o/old")];
        let upper = vec![dir("o", true), file("o/new")];
        let view = MergedView::merge([lower.as_slice(), upper.as_slice()]);
        let children: Vec<PathBuf> = view.children(Path::new("o")).into_iter().collect();
        assert_eq!(children, vec![PathBuf::from("new")]);
    }

    #[test]
    fn merge_readded_path_not_hidden() {
        let bottom = vec![file("f")];
        let middle = vec![whiteout("f")];
        let top = vec![file("f")];
        let view = MergedView::merge([bottom.as_slice(), middle.as_slice(), top.as_slice()]);
        assert!(view.entries.contains_key(Path::new("f")));
        assert!(!view.hidden.contains(Path::new("f")));
    }

    #[test]
    fn merge_dir_over_dir_is_no_override() {
        let lower = vec![dir("d", false), file("d/a")];
        let upper = vec![dir("d", false), file("d/b")];
        let view = MergedView::merge([lower.as_slice(), upper.as_slice()]);
        assert!(!view.entries[Path::new("d")].overrides_lower);
        assert_eq!(view.children(Path::new("d")).len(), 2);
    }
}
