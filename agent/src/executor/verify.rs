//! The merged-view check run on every build. A bounded set of probes, chosen once per stack,
//! fails when a layer is missing or a lower file wins over an upper one. It also fails when a
//! whiteout or opaque directory does not hide what it should.

use std::{
    collections::BTreeSet,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::{
    ExecutorError,
    layers::Layer,
    userns::{IDMAP_RANGE, OVERFLOW_UID},
    view::{Entry, EntryKind, MergedView},
};

/// Files up to this size are compared byte for byte; larger ones by size.
const MAX_COMPARED_BYTES: u64 = 4096;
/// Caps on each kind of probe, so a large image keeps the check to a few hundred syscalls.
const MAX_OVERRIDE_PROBES: usize = 64;
const MAX_HIDDEN_PROBES: usize = 64;
const MAX_LISTING_PROBES: usize = 16;

#[derive(Clone, Debug)]
enum Probe {
    /// A file that must show the given layer's content and owner.
    File {
        path: PathBuf,
        size: u64,
        content: Option<Vec<u8>>,
        disk_uid: u32,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    Absent {
        path: PathBuf,
    },
    /// A directory that must list exactly these names.
    Listing {
        path: PathBuf,
        names: BTreeSet<PathBuf>,
    },
}

/// The probes for one stack of layers.
#[derive(Clone, Debug)]
pub(crate) struct ViewCheck {
    probes: Vec<Probe>,
}

impl ViewCheck {
    /// Chooses the probes for `layers` (bottom first) from their scanned entries: one file
    /// provided by each layer, files that override lower ones, hidden paths and opaque
    /// directories' listings.
    pub(crate) fn new(layers: &[Layer], scanned: &[&[Entry]]) -> Result<ViewCheck, ExecutorError> {
        let view = MergedView::merge(scanned.iter().copied());
        let mut probes = Vec::new();

        let mut witnessed = vec![false; layers.len()];
        let mut overrides = 0;
        for (path, entry) in &view.entries {
            let witness = !witnessed[entry.layer];
            let is_override = entry.overrides_lower && overrides < MAX_OVERRIDE_PROBES;
            if !(witness || is_override) {
                continue;
            }
            let probe = match &entry.kind {
                EntryKind::File { size, uid } => {
                    file_probe(&layers[entry.layer].fs, path, *size, *uid)?
                }
                EntryKind::Symlink { target } if is_override => Probe::Symlink {
                    path: path.clone(),
                    target: target.clone(),
                },
                _ => continue,
            };
            witnessed[entry.layer] = true;
            if is_override {
                overrides += 1;
            }
            probes.push(probe);
        }

        for path in view.hidden.iter().take(MAX_HIDDEN_PROBES) {
            probes.push(Probe::Absent { path: path.clone() });
        }

        let opaque_dirs = view
            .entries
            .iter()
            .filter(|(_, entry)| entry.kind == EntryKind::Dir { opaque: true })
            .take(MAX_LISTING_PROBES);
        for (path, _) in opaque_dirs {
            probes.push(Probe::Listing {
                path: path.clone(),
                names: view.children(path),
            });
        }
        Ok(ViewCheck { probes })
    }

    pub(crate) fn probe_count(&self) -> usize {
        self.probes.len()
    }

    /// Checks the overlay mounted at `merged`. With `idmap_base`, files must show their
    /// on-disk owner shifted by that base, as an idmapped lower layer presents them.
    pub(crate) fn verify(
        &self,
        merged: &Path,
        idmap_base: Option<u32>,
    ) -> Result<(), ExecutorError> {
        for probe in &self.probes {
            if let Err(problem) = check_probe(merged, probe, idmap_base) {
                return Err(ExecutorError::MergedView {
                    merged: merged.to_path_buf(),
                    problem,
                });
            }
        }
        Ok(())
    }
}

fn file_probe(layer_fs: &Path, path: &Path, size: u64, uid: u32) -> Result<Probe, ExecutorError> {
    let content = if size <= MAX_COMPARED_BYTES {
        let source = layer_fs.join(path);
        let bytes =
            fs::read(&source).map_err(|e| ExecutorError::io("read layer file", &source, e))?;
        Some(bytes)
    } else {
        None
    };
    Ok(Probe::File {
        path: path.to_path_buf(),
        size,
        content,
        disk_uid: uid,
    })
}

fn expected_uid(disk_uid: u32, idmap_base: Option<u32>) -> u32 {
    match idmap_base {
        None => disk_uid,
        Some(base) if disk_uid < IDMAP_RANGE => base + disk_uid,
        Some(_) => OVERFLOW_UID,
    }
}

fn check_probe(merged: &Path, probe: &Probe, idmap_base: Option<u32>) -> Result<(), String> {
    match probe {
        Probe::File {
            path,
            size,
            content,
            disk_uid,
        } => {
            let full = merged.join(path);
            let meta = fs::symlink_metadata(&full)
                .map_err(|e| format!("`{}` is missing ({e})", path.display()))?;
            if meta.len() != *size {
                return Err(format!(
                    "`{}` is {} bytes, expected {size} from the top layer providing it",
                    path.display(),
                    meta.len()
                ));
            }
            let uid = expected_uid(*disk_uid, idmap_base);
            if meta.uid() != uid {
                return Err(format!(
                    "`{}` is owned by uid {}, expected {uid}",
                    path.display(),
                    meta.uid()
                ));
            }
            if let Some(expected) = content {
                let found = fs::read(&full)
                    .map_err(|e| format!("failed to read `{}`: {e}", path.display()))?;
                if &found != expected {
                    return Err(format!(
                        "`{}` contains {:?}, expected {:?} from the top layer providing it",
                        path.display(),
                        String::from_utf8_lossy(&found),
                        String::from_utf8_lossy(expected)
                    ));
                }
            }
            Ok(())
        }
        Probe::Symlink { path, target } => {
            let found = fs::read_link(merged.join(path))
                .map_err(|e| format!("symlink `{}` is missing ({e})", path.display()))?;
            if &found != target {
                return Err(format!(
                    "symlink `{}` points to `{}`, expected `{}`",
                    path.display(),
                    found.display(),
                    target.display()
                ));
            }
            Ok(())
        }
        Probe::Absent { path } => match fs::symlink_metadata(merged.join(path)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("failed to stat `{}`: {e}", path.display())),
            Ok(_) => Err(format!(
                "`{}` is visible, but a whiteout or opaque directory above should hide it",
                path.display()
            )),
        },
        Probe::Listing { path, names } => {
            let full = merged.join(path);
            let listing = fs::read_dir(&full)
                .map_err(|e| format!("failed to list `{}`: {e}", path.display()))?;
            let mut found = BTreeSet::new();
            for item in listing {
                let item = item.map_err(|e| format!("failed to list `{}`: {e}", path.display()))?;
                found.insert(PathBuf::from(item.file_name()));
            }
            if &found != names {
                return Err(format!(
                    "opaque directory `{}` lists {found:?}, expected {names:?}",
                    path.display()
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_uid_without_idmap() {
        assert_eq!(expected_uid(0, None), 0);
    }

    #[test]
    fn expected_uid_shifted_by_base() {
        assert_eq!(expected_uid(1000, Some(100_000)), 101_000);
    }

    #[test]
    fn expected_uid_outside_range_is_overflow() {
        assert_eq!(expected_uid(IDMAP_RANGE, Some(100_000)), OVERFLOW_UID);
    }
}
