//! Errors of the overlay executor: each names the value at fault and what to do about it.

use std::{io, path::PathBuf};

use super::{MAX_BUILDERS, MAX_LAYERS};

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(
        "layer count {layers} is invalid: use 1 to {MAX_LAYERS} layers, the overlayfs \
         lower-layer limit"
    )]
    LayerCount { layers: u32 },

    #[error("builder count {builders} is invalid: use 1 to {MAX_BUILDERS} builders")]
    BuilderCount { builders: u32 },

    #[error("rate limit {rate_per_s} builds/s is invalid: use a finite number above zero, or none")]
    RateLimit { rate_per_s: f64 },

    #[error(
        "the executor needs root (effective uid {euid}): it mounts overlays and creates user \
         namespaces, so run it as root"
    )]
    NotRoot { euid: u32 },

    #[error("store root `{path}` is not a directory: pass a directory or a path to create")]
    StoreNotDirectory { path: PathBuf },

    #[error(
        "store root `{path}` contains `{character}`, which overlay mount options cannot carry: \
         choose a path without `:`, `,`, `\\` or newlines"
    )]
    StorePathCharacter { path: PathBuf, character: char },

    #[error(
        "lowerdir `{path}` is {len} bytes, over the 255-byte limit of fsconfig: choose a \
         shorter store root"
    )]
    LowerdirTooLong { path: PathBuf, len: usize },

    #[error(
        "overlay options for {layers} layers are {len} bytes, over the 4095-byte limit of \
         mount(2): use mount API `fsconfig` or `auto`"
    )]
    LegacyOptionsTooLong { layers: usize, len: usize },

    #[error("failed to {action} `{path}`")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{syscall} failed on `{path}`{detail}")]
    Syscall {
        syscall: &'static str,
        path: PathBuf,
        /// Kernel messages from a filesystem context, prefixed with ": ", or empty.
        detail: String,
        #[source]
        source: io::Error,
    },

    #[error("merged view at `{merged}` is wrong: {problem}")]
    MergedView { merged: PathBuf, problem: String },

    #[error("failed to create the user namespace for idmapped mounts (base id {base_id})")]
    UserNamespace {
        base_id: u32,
        #[source]
        source: io::Error,
    },

    #[error("{limit} is {value}, below the {needed} that the executor needs: {fix}")]
    ResourceLimit {
        limit: &'static str,
        value: u64,
        needed: u64,
        fix: String,
    },

    #[error("failed to start builder thread {index}")]
    Spawn {
        index: u32,
        #[source]
        source: io::Error,
    },

    #[error(
        "the layer count is fixed at {layers} by the image `{image}`: restart the executor \
         without an image to change it"
    )]
    LayersFixedByImage { image: PathBuf, layers: u32 },

    #[error("the executor is stopped: start a new one")]
    Stopped,

    #[error("OCI image layout `{path}` is invalid: {reason}")]
    InvalidImage { path: PathBuf, reason: String },

    #[error(
        "digest `{digest}` is not supported: only `sha256:` followed by 64 lowercase hex \
         digits is"
    )]
    UnsupportedDigest { digest: String },

    #[error("blob `{digest}` is missing: expected it at `{path}`; export the image again")]
    BlobMissing { digest: String, path: PathBuf },

    #[error(
        "blob `{path}` has sha256 `{actual}` but the image names `{digest}`: the blob is \
         corrupt, export the image again"
    )]
    DigestMismatch {
        digest: String,
        actual: String,
        path: PathBuf,
    },

    #[error(
        "layer `{digest}` has media type `{media_type}`: only uncompressed and gzip tar layers \
         are supported"
    )]
    UnsupportedMediaType { digest: String, media_type: String },

    #[error("layer `{digest}` is not a valid tar archive: export the image again")]
    InvalidLayer {
        digest: String,
        #[source]
        source: io::Error,
    },

    #[error("layer `{digest}` has an entry at `{entry}` that leaves the layer root")]
    UnsafeLayerPath { digest: String, entry: PathBuf },
}

impl ExecutorError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ExecutorError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn syscall(
        syscall: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Self {
        ExecutorError::Syscall {
            syscall,
            path: path.into(),
            detail: String::new(),
            source,
        }
    }
}

/// Formats an error with its chain of sources, joined with ": ".
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
