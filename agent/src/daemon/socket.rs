//! Binding the agent's Unix socket: a private directory, a private socket file, and a stale
//! file from an earlier run replaced only when nothing listens on it.

use std::{
    io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use thiserror::Error;
use tokio::net::UnixListener;
use tracing::info;

/// Default socket path of `mountscope agent` and of clients' `--connect`.
pub const DEFAULT_SOCKET: &str = "/run/mountscope/agent.sock";

#[derive(Debug, Error)]
pub enum BindError {
    #[error("failed to create the socket directory `{path}`")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "socket path `{path}` is {length} bytes long, above the {SOCKET_PATH_MAX} bytes a Unix \
         socket address holds; pass a shorter --socket"
    )]
    TooLong { path: PathBuf, length: usize },
    #[error("another agent already listens on `{0}`; stop it or pass another --socket")]
    InUse(PathBuf),
    #[error("`{0}` exists and is not a socket; remove it or pass another --socket")]
    NotASocket(PathBuf),
    #[error("failed to remove the stale socket `{path}`")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to bind the socket `{path}`")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to set mode 0600 on the socket `{path}` or to move it into place")]
    Permissions {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Longest path a Unix socket address holds: `sun_path` is 108 bytes with the final NUL.
const SOCKET_PATH_MAX: usize = 107;

/// Binds `path` with mode 0600, creating its parent directory with mode 0700 when missing.
/// An existing directory keeps its mode. Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let length = path.as_os_str().len();
    if length > SOCKET_PATH_MAX {
        return Err(BindError::TooLong {
            path: path.to_path_buf(),
            length,
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| BindError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        info!(dir = %dir.display(), "created the socket directory with mode 0700");
    }
    remove_stale(path)?;

    // The socket is bound under a temporary name, made 0600 and then renamed, so no client
    // can connect while it has the umask's mode. Changing the umask instead would affect
    // every thread of the process, such as executor threads creating directories.
    // A socket left by an earlier process with the same pid has no listener, so it is removed.
    let temporary = path.with_file_name(format!(".mountscope-{}", std::process::id()));
    if temporary.as_os_str().len() > SOCKET_PATH_MAX {
        // The temporary name does not fit where the final one does, so the socket is bound
        // in place and has the umask's mode until the chmod.
        let listener = UnixListener::bind(path).map_err(|source| BindError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| BindError::Permissions {
                path: path.to_path_buf(),
                source,
            },
        )?;
        return Ok(listener);
    }
    if std::fs::symlink_metadata(&temporary).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(&temporary);
    }
    let listener = UnixListener::bind(&temporary).map_err(|source| BindError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(source) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(BindError::Permissions {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(listener)
}

/// Removes a socket file left by an agent that is gone. A file that is not a socket, or a
/// socket that accepts a connection, is left alone.
fn remove_stale(path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BindError::Bind {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket(path.to_path_buf()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(BindError::InUse(path.to_path_buf()));
    }
    std::fs::remove_file(path).map_err(|source| BindError::RemoveStale {
        path: path.to_path_buf(),
        source,
    })?;
    info!(socket = %path.display(), "removed a stale socket that nothing listened on");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mountscope-socket-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn creates_private_dir_and_socket() {
        let dir = temp_dir("modes");
        let path = dir.join("sub/agent.sock");
        let _listener = bind(&path).unwrap();
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        let socket_mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(dir_mode, 0o700);
        assert_eq!(socket_mode, 0o600);
    }

    #[tokio::test]
    async fn bind_leaves_only_the_socket() {
        let dir = temp_dir("only");
        let path = dir.join("agent.sock");
        let _listener = bind(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names, vec![std::ffi::OsString::from("agent.sock")]);
    }

    /// Returns a path of exactly `length` bytes inside `dir`.
    fn path_of_length(dir: &Path, length: usize) -> PathBuf {
        let prefix = dir.as_os_str().len() + 1;
        dir.join("s".repeat(length - prefix))
    }

    #[tokio::test]
    async fn longest_path_binds() {
        let dir = temp_dir("longest");
        let path = path_of_length(&dir, SOCKET_PATH_MAX);
        let result = bind(&path);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(result.is_ok(), "{:?}", result.err());
    }

    #[tokio::test]
    async fn too_long_path_is_rejected() {
        let dir = temp_dir("too-long");
        let path = path_of_length(&dir, SOCKET_PATH_MAX + 1);
        let result = bind(&path);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(result, Err(BindError::TooLong { .. })));
    }

    #[tokio::test]
    async fn replaces_stale_socket() {
        let dir = temp_dir("stale");
        let path = dir.join("agent.sock");
        drop(bind(&path).unwrap());
        assert!(path.exists(), "a dropped listener leaves its file behind");
        let rebound = bind(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(rebound.is_ok(), "{rebound:?}");
    }

    #[tokio::test]
    async fn rejects_live_socket() {
        let dir = temp_dir("live");
        let path = dir.join("agent.sock");
        let _first = bind(&path).unwrap();
        let second = bind(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(second, Err(BindError::InUse(_))), "{second:?}");
    }

    #[tokio::test]
    async fn rejects_regular_file() {
        let dir = temp_dir("file");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        std::fs::write(&path, b"not a socket").unwrap();
        let result = bind(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            matches!(result, Err(BindError::NotASocket(_))),
            "{result:?}"
        );
    }
}
