//! The merged-view check run on every build. A bounded set of probes, chosen once per stack,
//! fails when a layer is missing or a lower file wins over an upper one. It also fails when a
//! whiteout or opaque directory does not hide what it should.
//!
//! Every build checks the file that the most layers provide, which must show the top layer's
//! content, and a rotating window of each other kind of probe. Each path lookup in a fresh
//! overlay searches every lower layer, so checking all probes each time made the check cost
//! more than the build. Every probe still runs within `ceil(n / WINDOW)` consecutive builds of
//! one builder, where n is the number of probes of its kind.

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
/// Probes of each kind that one build checks besides the deepest override.
const WINDOW: usize = 2;

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
    /// The override of the file that the most layers provide, checked on every build.
    deepest_override: Option<Probe>,
    /// Probes by kind (layer witnesses, overrides, hidden paths, opaque listings), each
    /// checked a window at a time.
    kinds: [Vec<Probe>; 4],
}

impl ViewCheck {
    /// Chooses the probes for `layers` (bottom first) from their scanned entries: one file
    /// provided by each layer, files that override lower ones, hidden paths and opaque
    /// directories' listings.
    pub(crate) fn new(layers: &[Layer], scanned: &[&[Entry]]) -> Result<ViewCheck, ExecutorError> {
        let view = MergedView::merge(scanned.iter().copied());
        let mut witnesses = Vec::new();
        let mut overrides = Vec::new();
        let mut deepest: Option<(usize, Probe)> = None;

        let mut witnessed = vec![false; layers.len()];
        for (path, entry) in &view.entries {
            let witness = !witnessed[entry.layer];
            let is_override = entry.overrides_lower && overrides.len() < MAX_OVERRIDE_PROBES;
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
            if !is_override {
                witnesses.push(probe);
                continue;
            }
            let depth = providing_layers(scanned, path);
            if deepest.as_ref().is_none_or(|(max, _)| depth > *max) {
                deepest = Some((depth, probe.clone()));
            }
            overrides.push(probe);
        }

        let hidden = view
            .hidden
            .iter()
            .take(MAX_HIDDEN_PROBES)
            .map(|path| Probe::Absent { path: path.clone() })
            .collect();

        let listings = view
            .entries
            .iter()
            .filter(|(_, entry)| entry.kind == EntryKind::Dir { opaque: true })
            .take(MAX_LISTING_PROBES)
            .map(|(path, _)| Probe::Listing {
                path: path.clone(),
                names: view.children(path),
            })
            .collect();
        Ok(ViewCheck {
            deepest_override: deepest.map(|(_, probe)| probe),
            kinds: [witnesses, overrides, hidden, listings],
        })
    }

    pub(crate) fn probe_count(&self) -> usize {
        let deepest = usize::from(self.deepest_override.is_some());
        deepest + self.kinds.iter().map(Vec::len).sum::<usize>()
    }

    /// Returns the probes that build number `round` of one builder checks: the deepest
    /// override, then `WINDOW` probes of each kind, taken in turn.
    fn probes_for_round(&self, round: u64) -> impl Iterator<Item = &Probe> {
        let windows = self.kinds.iter().flat_map(move |probes| {
            let start = if probes.is_empty() {
                0
            } else {
                (round as usize).wrapping_mul(WINDOW) % probes.len()
            };
            probes
                .iter()
                .cycle()
                .skip(start)
                .take(WINDOW.min(probes.len()))
        });
        self.deepest_override.iter().chain(windows)
    }

    /// Checks the overlay mounted at `merged` with the probes of build number `round` of one
    /// builder. With `idmap_base`, files must show their on-disk owner shifted by that base,
    /// as an idmapped lower layer presents them.
    pub(crate) fn verify(
        &self,
        merged: &Path,
        idmap_base: Option<u32>,
        round: u64,
    ) -> Result<(), ExecutorError> {
        for probe in self.probes_for_round(round) {
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

/// Counts the layers that contain `path`, whiteouts included.
fn providing_layers(scanned: &[&[Entry]], path: &Path) -> usize {
    scanned
        .iter()
        .filter(|entries| {
            entries
                .binary_search_by(|entry| entry.path.as_path().cmp(path))
                .is_ok()
        })
        .count()
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

    fn absent(path: &str) -> Probe {
        Probe::Absent { path: path.into() }
    }

    fn probe_path(probe: &Probe) -> &Path {
        match probe {
            Probe::File { path, .. }
            | Probe::Symlink { path, .. }
            | Probe::Absent { path }
            | Probe::Listing { path, .. } => path,
        }
    }

    /// Builds a check whose probes are named `<kind>-<index>`.
    fn check_of(kind_sizes: [usize; 4]) -> ViewCheck {
        let mut kind = 0;
        let kinds = kind_sizes.map(|size| {
            kind += 1;
            (0..size).map(|i| absent(&format!("{kind}-{i}"))).collect()
        });
        ViewCheck {
            deepest_override: Some(absent("deepest")),
            kinds,
        }
    }

    #[test]
    fn round_always_checks_deepest_override() {
        let check = check_of([5, 3, 0, 1]);
        for round in 0..10 {
            let first = check.probes_for_round(round).next().expect("a probe");
            assert_eq!(probe_path(first), Path::new("deepest"), "round {round}");
        }
    }

    #[test]
    fn round_window_per_kind() {
        let check = check_of([5, 3, 0, 1]);
        // deepest + 2 + 2 + 0 + 1
        assert_eq!(check.probes_for_round(0).count(), 6);
    }

    #[test]
    fn rounds_cover_every_probe() {
        let check = check_of([5, 3, 0, 1]);
        let rounds = 5_usize.div_ceil(WINDOW) as u64;
        let seen: BTreeSet<&Path> = (0..rounds)
            .flat_map(|round| check.probes_for_round(round).map(probe_path))
            .collect();
        for probes in &check.kinds {
            for probe in probes {
                let path = probe_path(probe);
                assert!(seen.contains(path), "`{}` never checked", path.display());
            }
        }
    }

    #[test]
    fn providing_layers_counts_each_layer() {
        let file = |path: &str| Entry {
            path: path.into(),
            kind: EntryKind::File { size: 1, uid: 0 },
        };
        let bottom = vec![file("a"), file("b")];
        let top = vec![file("b")];
        let scanned = [bottom.as_slice(), top.as_slice()];
        assert_eq!(providing_layers(&scanned, Path::new("b")), 2);
        assert_eq!(providing_layers(&scanned, Path::new("a")), 1);
    }

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
