//! The layer store the builders share: its layers (synthetic or imported from an OCI image),
//! each layer's scan, and the merged-view check of each stack height, computed once.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use super::{
    ExecutorError,
    layers::{self, Layer},
    oci,
    verify::ViewCheck,
    view::{self, Entry},
};

/// A stack of the bottom N layers and its check.
pub(crate) struct Stack {
    pub layers: Vec<Layer>,
    pub check: Arc<ViewCheck>,
}

pub(crate) struct Store {
    root: PathBuf,
    snapshots: PathBuf,
    files_per_layer: u32,
    image: Option<PathBuf>,
    state: Mutex<StoreState>,
}

#[derive(Default)]
struct StoreState {
    /// Every layer written so far, bottom first.
    layers: Vec<Layer>,
    scans: Vec<Option<Arc<Vec<Entry>>>>,
    checks: HashMap<usize, Arc<ViewCheck>>,
}

impl Store {
    /// Opens the store at `root`: imports `image` when given, or else makes sure `layers`
    /// synthetic layers exist.
    pub(crate) fn open(
        root: &Path,
        files_per_layer: u32,
        image: Option<&Path>,
        layers: u32,
    ) -> Result<Store, ExecutorError> {
        let store = Store {
            root: root.to_path_buf(),
            snapshots: layers::snapshots_dir(root),
            files_per_layer,
            image: image.map(Path::to_path_buf),
            state: Mutex::new(StoreState::default()),
        };
        let written = match image {
            Some(image) => oci::import_image(image, root)?,
            None => layers::ensure_synthetic_layers(root, layers, files_per_layer)?,
        };
        store.replace_layers(written);
        Ok(store)
    }

    fn replace_layers(&self, written: Vec<Layer>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.scans.resize(written.len(), None);
        state.layers = written;
    }

    pub(crate) fn snapshots(&self) -> &Path {
        &self.snapshots
    }

    pub(crate) fn image(&self) -> Option<&Path> {
        self.image.as_deref()
    }

    pub(crate) fn layer_count(&self) -> u32 {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.layers.len() as u32
    }

    /// Writes synthetic layers up to `count`. Layers already written stay as they are.
    pub(crate) fn ensure_layers(&self, count: u32) -> Result<(), ExecutorError> {
        if let Some(image) = &self.image {
            let layers = self.layer_count();
            if count != layers {
                return Err(ExecutorError::LayersFixedByImage {
                    image: image.clone(),
                    layers,
                });
            }
            return Ok(());
        }
        if count <= self.layer_count() {
            return Ok(());
        }
        let written = layers::ensure_synthetic_layers(&self.root, count, self.files_per_layer)?;
        self.replace_layers(written);
        Ok(())
    }

    /// Returns the bottom `count` layers and the check of their merged view.
    pub(crate) fn stack(&self, count: u32) -> Result<Stack, ExecutorError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let count = count as usize;
        if count > state.layers.len() {
            return Err(ExecutorError::LayerCount {
                layers: count as u32,
            });
        }
        let layers = state.layers[..count].to_vec();
        if let Some(check) = state.checks.get(&count) {
            return Ok(Stack {
                layers,
                check: Arc::clone(check),
            });
        }

        let mut scans = Vec::with_capacity(count);
        for (index, layer) in layers.iter().enumerate() {
            let scan = match &state.scans[index] {
                Some(scan) => Arc::clone(scan),
                None => {
                    let scan = Arc::new(view::scan_layer(&layer.fs)?);
                    state.scans[index] = Some(Arc::clone(&scan));
                    scan
                }
            };
            scans.push(scan);
        }
        let scan_slices: Vec<&[Entry]> = scans.iter().map(|scan| scan.as_slice()).collect();
        let check = Arc::new(ViewCheck::new(&layers, &scan_slices)?);
        tracing::debug!(
            layers = count,
            probes = check.probe_count(),
            "prepared the merged-view check"
        );
        state.checks.insert(count, Arc::clone(&check));
        Ok(Stack { layers, check })
    }
}
