//! The synthetic layer store: layers laid out like a runtime's snapshot directory
//! (`<root>/snapshots/<id>/fs`), each with a marker file, overrides of lower files, a whiteout
//! and an opaque directory, generated once and reused.

use std::{
    ffi::CString,
    fs,
    io::{self, Write as _},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use super::ExecutorError;

/// Name of the file that marks a snapshot as completely written. Its content records the
/// parameters, so a snapshot generated with other parameters is written again.
pub(crate) const COMPLETE_STAMP: &str = "complete";

/// One lower layer of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Snapshot id: the directory name under `<root>/snapshots`.
    pub id: String,
    /// The layer's root directory, `<root>/snapshots/<id>/fs`.
    pub fs: PathBuf,
}

pub(crate) fn snapshots_dir(store_root: &Path) -> PathBuf {
    store_root.join("snapshots")
}

/// Makes sure synthetic layers `1..=count` exist under `store_root` with `files_per_layer`
/// files each, writing those that are missing or incomplete. Returns them bottom first.
pub(crate) fn ensure_synthetic_layers(
    store_root: &Path,
    count: u32,
    files_per_layer: u32,
) -> Result<Vec<Layer>, ExecutorError> {
    let snapshots = snapshots_dir(store_root);
    fs::create_dir_all(&snapshots)
        .map_err(|e| ExecutorError::io("create the snapshots directory", &snapshots, e))?;

    let stamp = format!("synthetic files_per_layer={files_per_layer}\n");
    let mut layers = Vec::with_capacity(count as usize);
    for index in 1..=count {
        let id = index.to_string();
        let dir = snapshots.join(&id);
        if !is_complete(&dir, &stamp) {
            write_snapshot(&snapshots, &id, &stamp, |fs_dir| {
                write_synthetic_layer(fs_dir, index, files_per_layer)
            })?;
        }
        layers.push(Layer {
            id,
            fs: dir.join("fs"),
        });
    }
    Ok(layers)
}

/// Checks whether the snapshot at `dir` was completely written with the given stamp.
pub(crate) fn is_complete(dir: &Path, stamp: &str) -> bool {
    fs::read_to_string(dir.join(COMPLETE_STAMP)).is_ok_and(|found| found == stamp)
}

/// Writes snapshot `id` into a temporary directory with `fill`, stamps it and renames it into
/// place, so a crash never leaves a snapshot that looks complete but is not.
pub(crate) fn write_snapshot(
    snapshots: &Path,
    id: &str,
    stamp: &str,
    fill: impl FnOnce(&Path) -> Result<(), ExecutorError>,
) -> Result<(), ExecutorError> {
    let dir = snapshots.join(id);
    let staging = snapshots.join(format!(".{id}.partial-{}", std::process::id()));
    remove_if_present(&staging)?;
    remove_if_present(&dir)?;

    let fs_dir = staging.join("fs");
    fs::create_dir_all(&fs_dir)
        .map_err(|e| ExecutorError::io("create the snapshot directory", &fs_dir, e))?;
    fill(&fs_dir)?;

    let stamp_path = staging.join(COMPLETE_STAMP);
    fs::write(&stamp_path, stamp)
        .map_err(|e| ExecutorError::io("write the snapshot stamp", &stamp_path, e))?;
    fs::rename(&staging, &dir).map_err(|e| ExecutorError::io("rename the snapshot", &dir, e))
}

fn remove_if_present(path: &Path) -> Result<(), ExecutorError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ExecutorError::io("remove the stale snapshot", path, e)),
    }
}

/// Writes layer `index` (1 is the bottom). Each layer contains:
/// - `etc/mountscope/layer-<index>`: its marker;
/// - `etc/mountscope/top`: rewritten by every layer, so the merged view shows the top layer's;
/// - `data/<index>/file-<j>` for `j < files_per_layer`;
/// - `data/<index - 1>/file-0`: an override of the layer below's first file;
/// - `doomed-<index>`, and a whiteout of the layer below's `doomed-<index - 1>`;
/// - `opaque/from-<index>` in a directory that is opaque above layer 1, so the merged view
///   lists only the top layer's file there.
fn write_synthetic_layer(
    fs_dir: &Path,
    index: u32,
    files_per_layer: u32,
) -> Result<(), ExecutorError> {
    let marker = format!("layer {index}\n");
    write_file(
        &fs_dir.join(format!("etc/mountscope/layer-{index}")),
        &marker,
    )?;
    write_file(&fs_dir.join("etc/mountscope/top"), &marker)?;

    for file in 0..files_per_layer {
        let path = fs_dir.join(format!("data/{index}/file-{file}"));
        write_file(&path, &format!("layer {index} file {file}\n"))?;
    }

    write_file(&fs_dir.join(format!("doomed-{index}")), &marker)?;
    write_file(&fs_dir.join(format!("opaque/from-{index}")), &marker)?;

    if index > 1 {
        let below = index - 1;
        if files_per_layer > 0 {
            let path = fs_dir.join(format!("data/{below}/file-0"));
            write_file(&path, &format!("layer {index} overrides layer {below}\n"))?;
        }
        make_whiteout(&fs_dir.join(format!("doomed-{below}")))?;
        mark_opaque(&fs_dir.join("opaque"))?;
    }
    Ok(())
}

fn write_file(path: &Path, content: &str) -> Result<(), ExecutorError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| ExecutorError::io("create directory", parent, e))?;
    }
    let mut file = fs::File::create(path).map_err(|e| ExecutorError::io("create file", path, e))?;
    file.write_all(content.as_bytes())
        .map_err(|e| ExecutorError::io("write file", path, e))
}

fn c_path(path: &Path) -> Result<CString, ExecutorError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        let error = io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte");
        ExecutorError::io("convert path", path, error)
    })
}

/// Creates an overlayfs whiteout at `path`: a character device with device number 0/0.
pub(crate) fn make_whiteout(path: &Path) -> Result<(), ExecutorError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| ExecutorError::io("create directory", parent, e))?;
    }
    let c_path = c_path(path)?;
    // SAFETY: `c_path` is NUL-terminated and outlives the call.
    let status = unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFCHR | 0o600, 0) };
    if status != 0 {
        let error = io::Error::last_os_error();
        return Err(ExecutorError::io("create the whiteout", path, error));
    }
    Ok(())
}

/// Marks the directory at `path` opaque (`trusted.overlay.opaque` = `y`), creating it first.
pub(crate) fn mark_opaque(path: &Path) -> Result<(), ExecutorError> {
    fs::create_dir_all(path).map_err(|e| ExecutorError::io("create directory", path, e))?;
    let c_path = c_path(path)?;
    // SAFETY: the path, name and value pointers are valid for the lengths given.
    let status = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    if status != 0 {
        let error = io::Error::last_os_error();
        return Err(ExecutorError::io("mark the directory opaque", path, error));
    }
    Ok(())
}

/// Checks whether the directory at `path` is marked opaque.
pub(crate) fn is_opaque(path: &Path) -> bool {
    let Ok(c_path) = c_path(path) else {
        return false;
    };
    let mut value = [0u8; 2];
    // SAFETY: the path and name are NUL-terminated; `value` is valid for writes of its length.
    let len = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    len == 1 && value[0] == b'y'
}
