//! The guest's initramfs: busybox, `overlay.ko`, the binaries under test with the shared
//! libraries `ldd` lists for them, the exit helper and `/init`, written as a gzip-compressed
//! cpio archive in the `newc` format the kernel unpacks.

use std::{
    collections::BTreeSet,
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::command;

/// Directories the init script mounts on or writes to.
const DIRECTORIES: &[&str] = &[
    "bin", "sbin", "dev", "etc", "lib", "lib64", "proc", "sys", "tmp", "root", "usr", "usr/bin",
];

/// One file of the archive.
enum Entry {
    Directory,
    /// Contents and permission bits.
    File(Vec<u8>, u32),
}

/// The archive's contents, by path without a leading `/`.
#[derive(Default)]
pub struct Initramfs {
    entries: Vec<(String, Entry)>,
    paths: BTreeSet<String>,
}

impl Initramfs {
    pub fn new() -> Initramfs {
        let mut initramfs = Initramfs::default();
        for directory in DIRECTORIES {
            initramfs.add_directory(directory);
        }
        initramfs
    }

    /// Adds `path` and any missing parent directories.
    fn add_directory(&mut self, path: &str) {
        if path.is_empty() || self.paths.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.add_directory(parent);
        }
        self.paths.insert(path.to_string());
        self.entries.push((path.to_string(), Entry::Directory));
    }

    /// Adds a file with `contents` at `path`, replacing an earlier one.
    pub fn add_bytes(&mut self, path: &str, contents: Vec<u8>, mode: u32) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.add_directory(parent);
        }
        self.entries.retain(|(existing, _)| existing != path);
        self.paths.insert(path.to_string());
        self.entries
            .push((path.to_string(), Entry::File(contents, mode)));
    }

    /// Adds the host file `source` at `path`, keeping its permission bits.
    pub fn add_file(&mut self, path: &str, source: &Path) -> Result<()> {
        let contents =
            fs::read(source).with_context(|| format!("failed to read {}", source.display()))?;
        let mode = fs::metadata(source)
            .with_context(|| format!("failed to stat {}", source.display()))?
            .permissions()
            .mode()
            & 0o7777;
        self.add_bytes(path, contents, mode);
        Ok(())
    }

    /// Adds an executable without its debug sections, at `path`, and the shared libraries it
    /// needs at their host paths.
    pub fn add_executable(&mut self, path: &str, source: &Path, scratch: &Path) -> Result<()> {
        let stripped = scratch.join(
            source
                .file_name()
                .with_context(|| format!("{} has no file name", source.display()))?,
        );
        command::run(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(source)
                .arg(&stripped),
        )?;
        self.add_file(path, &stripped)?;
        for library in shared_libraries(source)? {
            let name = library.to_string_lossy().into_owned();
            if !self.paths.contains(name.trim_start_matches('/')) {
                // Libraries are often symlinks, so the archive gets the file they point to.
                let real = fs::canonicalize(&library)
                    .with_context(|| format!("failed to resolve {}", library.display()))?;
                self.add_file(&name, &real)?;
            }
        }
        Ok(())
    }

    /// Writes the archive to `output`, compressed with `gzip -1` (fast to compress, and the
    /// kernel's decompression under software emulation stays short).
    pub fn write(&self, output: &Path) -> Result<()> {
        let mut archive = Vec::new();
        for (inode, (path, entry)) in self.entries.iter().enumerate() {
            match entry {
                Entry::Directory => write_header(&mut archive, inode, path, 0o040_755, 0),
                Entry::File(contents, mode) => {
                    write_header(&mut archive, inode, path, 0o100_000 | mode, contents.len());
                    archive.extend_from_slice(contents);
                    pad(&mut archive);
                }
            }
        }
        write_header(&mut archive, self.entries.len(), "TRAILER!!!", 0, 0);

        let file = fs::File::create(output)
            .with_context(|| format!("failed to create {}", output.display()))?;
        let mut gzip = Command::new("gzip")
            .arg("-1")
            .stdin(Stdio::piped())
            .stdout(file)
            .spawn()
            .context("failed to start gzip")?;
        gzip.stdin
            .take()
            .context("gzip's stdin is not piped")?
            .write_all(&archive)
            .context("failed to write the archive to gzip")?;
        let status = gzip.wait().context("failed to wait for gzip")?;
        if !status.success() {
            bail!("gzip failed ({status}) writing {}", output.display());
        }
        Ok(())
    }
}

/// Returns the absolute paths of the shared libraries and the dynamic loader `ldd` lists for
/// `binary`, or an empty list for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let Some(listing) = command::probe(Command::new("ldd").arg(binary)) else {
        // ldd exits with status 1 for a static binary.
        return Ok(Vec::new());
    };
    let mut libraries = Vec::new();
    for line in listing.lines() {
        // Lines read `name => /path (0x...)`, `/lib64/ld-linux-x86-64.so.2 (0x...)` or
        // `linux-vdso.so.1 (0x...)`, which the kernel provides.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|path| path.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// Appends a `newc` header and the NUL-terminated, padded name.
fn write_header(archive: &mut Vec<u8>, inode: usize, name: &str, mode: u32, size: usize) {
    let name_size = name.len() + 1;
    // Fields: magic, inode, mode, uid, gid, nlink, mtime, size, dev major/minor,
    // rdev major/minor, name size, checksum (always 0 in newc).
    let header = format!(
        "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}\
         {name_size:08x}{:08x}",
        inode + 1,
        0,
        0,
        if mode & 0o040_000 != 0 { 2 } else { 1 },
        0,
        0,
        0,
        0,
        0,
        0,
    );
    archive.extend_from_slice(header.as_bytes());
    archive.extend_from_slice(name.as_bytes());
    archive.push(0);
    pad(archive);
}

/// Pads the archive to a multiple of 4 bytes, as `newc` requires after names and data.
fn pad(archive: &mut Vec<u8>) {
    while !archive.len().is_multiple_of(4) {
        archive.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_110_bytes_before_the_name() {
        let mut archive = Vec::new();
        write_header(&mut archive, 0, "init", 0o100_755, 5);
        assert_eq!(&archive[..6], b"070701");
        assert_eq!(&archive[110..114], b"init");
        assert!(archive.len().is_multiple_of(4));
    }

    #[test]
    fn parent_directories_come_first() {
        let mut initramfs = Initramfs::default();
        initramfs.add_bytes("/lib/x86_64-linux-gnu/libc.so.6", vec![1], 0o755);
        let paths: Vec<&str> = initramfs.entries.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "lib",
                "lib/x86_64-linux-gnu",
                "lib/x86_64-linux-gnu/libc.so.6"
            ]
        );
    }
}
