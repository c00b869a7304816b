//! OCI image layout import.

use std::path::Path;

use super::{ExecutorError, layers::Layer};

pub(crate) fn import_image(image: &Path, _store_root: &Path) -> Result<Vec<Layer>, ExecutorError> {
    Err(ExecutorError::InvalidImage {
        path: image.to_path_buf(),
        reason: "not implemented".into(),
    })
}
