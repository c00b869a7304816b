//! OCI image layout import: `index.json`, the manifest and each layer blob checked against its
//! sha256 digest, and each layer unpacked once into the store as `snapshots/oci-<digest>/fs`,
//! with OCI whiteouts (`.wh.<name>`, `.wh..wh..opq`) turned into overlayfs ones.

use std::os::unix::fs::OpenOptionsExt as _;
use std::{
    ffi::CString,
    fs,
    io::{self, Read},
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Component, Path, PathBuf},
};

use flate2::read::GzDecoder;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{
    ExecutorError,
    layers::{self, Layer},
};

const OPAQUE_MARKER: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    layers: Vec<Descriptor>,
}

/// Compression of a layer blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
}

fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
        _ => None,
    }
}

/// Meaning of an entry name in an OCI layer, for overlayfs.
#[derive(Debug, PartialEq, Eq)]
enum Whiteout<'a> {
    /// `.wh..wh..opq`: the directory containing it is opaque.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted.
    Delete(&'a str),
    /// An ordinary entry.
    None,
}

fn classify_name(name: &str) -> Whiteout<'_> {
    if name == OPAQUE_MARKER {
        Whiteout::Opaque
    } else if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
        Whiteout::Delete(target)
    } else {
        Whiteout::None
    }
}

/// Returns the hex part of a `sha256:<64 hex>` digest.
fn sha256_hex(digest: &str) -> Result<&str, ExecutorError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    let valid = hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        return Err(ExecutorError::UnsupportedDigest {
            digest: digest.to_string(),
        });
    }
    Ok(hex)
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Path of the blob with `digest`, after checking that its content has that digest.
fn verified_blob(image: &Path, digest: &str) -> Result<PathBuf, ExecutorError> {
    let hex = sha256_hex(digest)?;
    let path = image.join("blobs/sha256").join(hex);
    let mut file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ExecutorError::BlobMissing {
                digest: digest.to_string(),
                path,
            });
        }
        Err(e) => return Err(ExecutorError::io("open blob", &path, e)),
    };

    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(|e| ExecutorError::io("read blob", &path, e))?;
    let actual = hex_string(&hasher.finalize());
    if actual != hex {
        return Err(ExecutorError::DigestMismatch {
            digest: digest.to_string(),
            actual: format!("sha256:{actual}"),
            path,
        });
    }
    Ok(path)
}

fn read_json<T: for<'de> Deserialize<'de>>(image: &Path, path: &Path) -> Result<T, ExecutorError> {
    let text = fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ExecutorError::InvalidImage {
            path: image.to_path_buf(),
            reason: format!("`{}` is missing", path.display()),
        },
        _ => ExecutorError::io("read", path, e),
    })?;
    serde_json::from_slice(&text).map_err(|e| ExecutorError::InvalidImage {
        path: image.to_path_buf(),
        reason: format!("`{}` is not valid: {e}", path.display()),
    })
}

/// Finds the image manifest: the first manifest of `index.json`, following one nested index.
fn read_manifest(image: &Path) -> Result<Manifest, ExecutorError> {
    let index: Index = read_json(image, &image.join("index.json"))?;
    let mut descriptor = first_manifest(image, index)?;
    if descriptor.media_type == INDEX_MEDIA_TYPE {
        let nested: Index = read_json(image, &verified_blob(image, &descriptor.digest)?)?;
        descriptor = first_manifest(image, nested)?;
    }
    read_json(image, &verified_blob(image, &descriptor.digest)?)
}

fn first_manifest(image: &Path, index: Index) -> Result<Descriptor, ExecutorError> {
    index
        .manifests
        .into_iter()
        .next()
        .ok_or_else(|| ExecutorError::InvalidImage {
            path: image.to_path_buf(),
            reason: "the index lists no manifest".into(),
        })
}

/// Imports the image at `image` into the store at `store_root` and returns its layers, bottom
/// first. Layers already unpacked completely are reused.
pub(crate) fn import_image(image: &Path, store_root: &Path) -> Result<Vec<Layer>, ExecutorError> {
    if !image.is_dir() {
        return Err(ExecutorError::InvalidImage {
            path: image.to_path_buf(),
            reason: "it is not a directory; pass an OCI image layout directory".into(),
        });
    }
    let manifest = read_manifest(image)?;
    if manifest.layers.is_empty() {
        return Err(ExecutorError::InvalidImage {
            path: image.to_path_buf(),
            reason: "the manifest lists no layer".into(),
        });
    }

    let snapshots = layers::snapshots_dir(store_root);
    fs::create_dir_all(&snapshots)
        .map_err(|e| ExecutorError::io("create the snapshots directory", &snapshots, e))?;

    let mut imported = Vec::with_capacity(manifest.layers.len());
    for descriptor in &manifest.layers {
        let hex = sha256_hex(&descriptor.digest)?;
        let compression = layer_compression(&descriptor.media_type).ok_or_else(|| {
            ExecutorError::UnsupportedMediaType {
                digest: descriptor.digest.clone(),
                media_type: descriptor.media_type.clone(),
            }
        })?;
        let id = format!("oci-{}", &hex[..16]);
        let stamp = format!("oci {}\n", descriptor.digest);
        let dir = snapshots.join(&id);
        if !layers::is_complete(&dir, &stamp) {
            let blob = verified_blob(image, &descriptor.digest)?;
            layers::write_snapshot(&snapshots, &id, &stamp, |fs_dir| {
                unpack_layer(&blob, compression, fs_dir, &descriptor.digest)
            })?;
            tracing::info!(digest = %descriptor.digest, id = %id, "unpacked an image layer");
        }
        imported.push(Layer {
            id,
            fs: dir.join("fs"),
        });
    }
    Ok(imported)
}

/// Returns the entry path relative to the layer root, or `None` for the root itself. Rejects
/// paths that leave the root.
fn relative_entry_path(entry: &Path, digest: &str) -> Result<Option<PathBuf>, ExecutorError> {
    let mut relative = PathBuf::new();
    for component in entry.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ExecutorError::UnsafeLayerPath {
                    digest: digest.to_string(),
                    entry: entry.to_path_buf(),
                });
            }
        }
    }
    Ok((!relative.as_os_str().is_empty()).then_some(relative))
}

/// Creates the parent directories of `relative` under `root`, rejecting a parent that is a
/// symlink, which could point an entry outside the layer.
fn prepare_parent(root: &Path, relative: &Path, digest: &str) -> Result<(), ExecutorError> {
    let mut current = root.to_path_buf();
    let Some(parent) = relative.parent() else {
        return Ok(());
    };
    for part in parent.components() {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(ExecutorError::UnsafeLayerPath {
                    digest: digest.to_string(),
                    entry: relative.to_path_buf(),
                });
            }
            Ok(_) => {}
            Err(_) => fs::create_dir(&current)
                .map_err(|e| ExecutorError::io("create directory", &current, e))?,
        }
    }
    Ok(())
}

fn unpack_layer(
    blob: &Path,
    compression: Compression,
    root: &Path,
    digest: &str,
) -> Result<(), ExecutorError> {
    let file = fs::File::open(blob).map_err(|e| ExecutorError::io("open blob", blob, e))?;
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(GzDecoder::new(file)),
    };
    let invalid = |source| ExecutorError::InvalidLayer {
        digest: digest.to_string(),
        source,
    };

    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(invalid)? {
        let mut entry = entry.map_err(invalid)?;
        let path = entry.path().map_err(invalid)?.into_owned();
        let Some(relative) = relative_entry_path(&path, digest)? else {
            continue;
        };
        prepare_parent(root, &relative, digest)?;
        let full = root.join(&relative);

        let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or("");
        match classify_name(name) {
            Whiteout::Opaque => {
                layers::mark_opaque(full.parent().unwrap_or(root))?;
                continue;
            }
            Whiteout::Delete(target) => {
                layers::make_whiteout(&full.with_file_name(target))?;
                continue;
            }
            Whiteout::None => {}
        }
        unpack_entry(&mut entry, root, &full, digest)?;
    }
    Ok(())
}

fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    root: &Path,
    full: &Path,
    digest: &str,
) -> Result<(), ExecutorError> {
    let header = entry.header();
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let uid = header.uid().unwrap_or(0) as u32;
    let gid = header.gid().unwrap_or(0) as u32;
    let entry_type = header.entry_type();
    replace_existing(full, entry_type.is_dir())?;

    if entry_type.is_dir() {
        fs::create_dir_all(full).map_err(|e| ExecutorError::io("create directory", full, e))?;
    } else if entry_type.is_file() {
        // O_NOFOLLOW as a second guard: `replace_existing` already removed any symlink here.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(full)
            .map_err(|e| ExecutorError::io("create file", full, e))?;
        io::copy(entry, &mut file).map_err(|e| ExecutorError::io("write file", full, e))?;
    } else if entry_type.is_symlink() {
        let target = entry
            .link_name()
            .map_err(|source| ExecutorError::InvalidLayer {
                digest: digest.to_string(),
                source,
            })?
            .unwrap_or_default();
        std::os::unix::fs::symlink(&target, full)
            .map_err(|e| ExecutorError::io("create symlink", full, e))?;
    } else if entry_type.is_hard_link() {
        let target = entry
            .link_name()
            .map_err(|source| ExecutorError::InvalidLayer {
                digest: digest.to_string(),
                source,
            })?
            .unwrap_or_default();
        let Some(target) = relative_entry_path(&target, digest)? else {
            return Ok(());
        };
        fs::hard_link(root.join(target), full)
            .map_err(|e| ExecutorError::io("create hard link", full, e))?;
        return Ok(());
    } else if entry_type.is_character_special()
        || entry_type.is_block_special()
        || entry_type.is_fifo()
    {
        let kind = if entry_type.is_character_special() {
            libc::S_IFCHR
        } else if entry_type.is_block_special() {
            libc::S_IFBLK
        } else {
            libc::S_IFIFO
        };
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        let c_path = c_path(full)?;
        // SAFETY: `c_path` is NUL-terminated and outlives the call.
        let status =
            unsafe { libc::mknod(c_path.as_ptr(), kind | mode, libc::makedev(major, minor)) };
        if status != 0 {
            return Err(ExecutorError::io(
                "create device node",
                full,
                io::Error::last_os_error(),
            ));
        }
    } else {
        // NOTE: pax and GNU extension headers are consumed by the tar reader; other kinds
        // (sockets, unknown types) cannot live in a layer and are skipped.
        return Ok(());
    }

    set_owner(full, uid, gid)?;
    if !entry_type.is_symlink() {
        fs::set_permissions(full, fs::Permissions::from_mode(mode))
            .map_err(|e| ExecutorError::io("set permissions", full, e))?;
    }
    Ok(())
}

/// Removes what an earlier entry left at `full`, as tar does when a later entry of the same
/// name replaces it, so that writing the new entry never follows a symlink out of the layer.
/// A directory stays when the new entry is a directory too, so its contents are kept.
fn replace_existing(full: &Path, new_is_dir: bool) -> Result<(), ExecutorError> {
    let Ok(meta) = fs::symlink_metadata(full) else {
        return Ok(());
    };
    let result = if meta.is_dir() {
        if new_is_dir {
            return Ok(());
        }
        fs::remove_dir_all(full)
    } else {
        fs::remove_file(full)
    };
    result.map_err(|e| ExecutorError::io("replace earlier entry", full, e))
}

fn c_path(path: &Path) -> Result<CString, ExecutorError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        let error = io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte");
        ExecutorError::io("convert path", path, error)
    })
}

fn set_owner(path: &Path, uid: u32, gid: u32) -> Result<(), ExecutorError> {
    let c_path = c_path(path)?;
    // SAFETY: `c_path` is NUL-terminated and outlives the call.
    if unsafe { libc::lchown(c_path.as_ptr(), uid, gid) } != 0 {
        return Err(ExecutorError::io(
            "set owner",
            path,
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a plain tar in which `evil` is first a symlink to `victim`, then a regular file.
    fn symlink_then_file_tar(dir: &Path, victim: &Path) -> PathBuf {
        let path = dir.join("layer.tar");
        let mut builder = tar::Builder::new(fs::File::create(&path).unwrap());
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        builder.append_link(&mut link, "evil", victim).unwrap();
        let data = b"written by a layer";
        let mut file = tar::Header::new_gnu();
        file.set_entry_type(tar::EntryType::Regular);
        file.set_size(data.len() as u64);
        file.set_mode(0o666);
        builder.append_data(&mut file, "evil", &data[..]).unwrap();
        builder.finish().unwrap();
        path
    }

    #[test]
    fn later_file_does_not_follow_earlier_symlink() {
        let dir =
            std::env::temp_dir().join(format!("mountscope-oci-escape-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("root")).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, b"original").unwrap();
        let blob = symlink_then_file_tar(&dir, &victim);

        let result = unpack_layer(&blob, Compression::None, &dir.join("root"), "sha256:test");
        let victim_text = fs::read(&victim).unwrap();
        let unpacked = fs::read(dir.join("root/evil"));
        let _ = fs::remove_dir_all(&dir);

        assert!(result.is_ok(), "{result:?}");
        assert_eq!(victim_text, b"original");
        assert_eq!(unpacked.unwrap(), b"written by a layer");
    }

    #[test]
    fn whiteout_name_maps_to_delete() {
        assert_eq!(classify_name(".wh.passwd"), Whiteout::Delete("passwd"));
    }

    #[test]
    fn opaque_marker_maps_to_opaque() {
        assert_eq!(classify_name(".wh..wh..opq"), Whiteout::Opaque);
    }

    #[test]
    fn ordinary_name_is_no_whiteout() {
        assert_eq!(classify_name("wh.passwd"), Whiteout::None);
    }

    #[test]
    fn digest_needs_sha256_prefix() {
        let digest = format!("sha512:{}", "a".repeat(64));
        assert!(matches!(
            sha256_hex(&digest),
            Err(ExecutorError::UnsupportedDigest { .. })
        ));
    }

    #[test]
    fn digest_needs_64_lowercase_hex() {
        let digest = format!("sha256:{}", "A".repeat(64));
        assert!(sha256_hex(&digest).is_err());
    }

    #[test]
    fn digest_hex_extracted() {
        let hex = "b".repeat(64);
        assert_eq!(sha256_hex(&format!("sha256:{hex}")).unwrap(), hex);
    }

    #[test]
    fn sha256_of_abc() {
        let hash = hex_string(&Sha256::digest(b"abc"));
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn entry_path_rejects_parent() {
        let result = relative_entry_path(Path::new("a/../../etc"), "sha256:x");
        assert!(matches!(result, Err(ExecutorError::UnsafeLayerPath { .. })));
    }

    #[test]
    fn entry_path_strips_dot_and_root() {
        let result = relative_entry_path(Path::new("./etc/passwd"), "sha256:x").unwrap();
        assert_eq!(result, Some(PathBuf::from("etc/passwd")));
    }

    #[test]
    fn zstd_layer_unsupported() {
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd"),
            None
        );
    }
}
