//! The agent's whole boundary with the operating system. What it reads from its node goes
//! through [`Host`]: the mount table, files, directory listings, `stat` and `statvfs`, all by
//! *host* path. What a scrub changes goes through [`ScrubHost`] (deletes by directory handle,
//! `blkdiscard`). `commands` runs programs chrooted into the host root and reads this
//! machine's hostname.
//!
//! ```text
//!  discovery / identity / probe ──► Host ──────┬─► RealHost: <host-root>/<path> (a pod sees the node at /host)
//!  cleanup (wipe, block) ─────────► ScrubHost ─┘   FixtureHost (tests): a tree in testdata/ + a stat table
//!                                              └─► MemFs (tests): an in-memory volume that can refuse deletes
//!  nfs install ──► commands::{chroot, output_within}      main ──► commands::hostname
//! ```

pub mod commands;
pub mod mountinfo;
mod real;
pub mod scrub;

#[cfg(test)]
pub mod fixture;
#[cfg(test)]
pub mod memfs;

use std::io;
use std::path::{Path, PathBuf};

pub use mountinfo::{Mount, MountTable};
pub use real::RealHost;
#[cfg(test)]
pub use scrub::CommandOutput;
pub use scrub::{EntryStat, ScrubHost};

/// The program that scrubs block devices (from util-linux).
pub const BLKDISCARD: &str = "blkdiscard";

use crate::error::{Error, Result};

/// What kind of file an entry is (after following symlinks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A block device node.
    Block,
    /// A character device, socket or pipe.
    Other,
}

/// The parts of `stat(2)` discovery needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// File kind, after following symlinks.
    pub kind: FileKind,
    /// Device of the filesystem holding the file (`st_dev`) as (major, minor).
    pub dev: (u32, u32),
    /// For a device node, the device it stands for (`st_rdev`) as (major, minor).
    pub rdev: (u32, u32),
    /// Whether the path itself was a symlink.
    pub symlink: bool,
}

/// Usage figures from `statvfs(3)`, in bytes and inodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsUsage {
    /// Total size (`f_blocks × f_frsize`, what `df -B1` shows as the size).
    pub size: u64,
    /// Available to unprivileged users (`f_bavail × f_frsize`).
    pub available: u64,
    /// Used (`(f_blocks − f_bfree) × f_frsize`).
    pub used: u64,
    /// Total inodes.
    pub inodes: u64,
    /// Free inodes.
    pub inodes_free: u64,
}

/// Read access to a node, by host path (absolute paths as the node sees them).
pub trait Host: Send + Sync {
    /// The mount table file (`<host-root>/proc/1/mountinfo`), for change notifications.
    fn mount_table_path(&self) -> PathBuf;
    /// Read a file's text.
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Read up to `len` bytes at `offset` (superblocks).
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Names of a directory's entries, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// A symlink's target, as stored.
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// `stat`, following symlinks inside the host root (an absolute target is a host path).
    fn stat(&self, path: &Path) -> io::Result<FileInfo>;
    /// `statvfs`. May block forever on a dead mount: only probe workers call it.
    fn statvfs(&self, path: &Path) -> io::Result<FsUsage>;
    /// When the file was created (`statx` birth time), in nanoseconds since the epoch; an
    /// error where the filesystem does not record it. Never call it on a mount that can hang.
    fn birth_time(&self, path: &Path) -> io::Result<u128> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("no birth time for {}", path.display()),
        ))
    }

    /// The bytes of the host mount table (a mount point need not be UTF-8).
    fn read_mount_table(&self) -> io::Result<Vec<u8>> {
        self.read_to_string(&self.mount_table_path())
            .map(String::into_bytes)
    }

    /// Read and parse the host mount table.
    fn mount_table(&self) -> Result<MountTable> {
        let path = self.mount_table_path();
        let text = self
            .read_mount_table()
            .map_err(|source| Error::ReadMountInfo {
                path: path.clone(),
                source,
            })?;
        mountinfo::parse(&text).map_err(|(line, reason)| Error::ParseMountInfo {
            path,
            line,
            reason,
        })
    }
}

/// Join a symlink target to the directory holding the link, as the kernel would, but keep
/// absolute targets as host paths.
pub fn resolve_link(link: &Path, target: &Path) -> PathBuf {
    let joined = if target.is_absolute() {
        target.to_path_buf()
    } else {
        link.parent().unwrap_or(Path::new("/")).join(target)
    };
    normalize(&joined)
}

/// Remove `.` and `..` lexically, never going above `/`.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(p) => out.push(p),
            _ => {}
        }
    }
    out
}
