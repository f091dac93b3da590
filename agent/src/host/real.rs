//! [`Host`] over the real node, seen through `--host-root` (`/` when run directly, `/host` in
//! a pod that mounts the node's root there).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{major, minor};
use nix::sys::statvfs::statvfs;

use super::{FileInfo, FileKind, FsUsage, Host, resolve_link};

/// Symlink hops followed before giving up (as the kernel's `ELOOP`).
const MAX_LINKS: usize = 40;

/// The node's files under a host root.
#[derive(Clone, Debug)]
pub struct RealHost {
    root: PathBuf,
    mount_table: PathBuf,
}

impl RealHost {
    /// The node as seen under `root`, with its mount table at `<root>/proc/1/mountinfo`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let mount_table = root.join("proc/1/mountinfo");
        RealHost { root, mount_table }
    }

    /// Where a host path is in this process's view.
    fn local(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

fn split(dev: u64) -> (u32, u32) {
    (major(dev) as u32, minor(dev) as u32)
}

impl Host for RealHost {
    fn mount_table_path(&self) -> PathBuf {
        self.mount_table.clone()
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        if path == self.mount_table {
            return std::fs::read_to_string(path);
        }
        std::fs::read_to_string(self.local(path))
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = File::open(self.local(path))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len);
        file.take(len as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = std::fs::read_dir(self.local(path))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(self.local(path))
    }

    fn stat(&self, path: &Path) -> io::Result<FileInfo> {
        let mut current = path.to_path_buf();
        let mut symlink = false;
        for _ in 0..MAX_LINKS {
            let meta = std::fs::symlink_metadata(self.local(&current))?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                symlink = true;
                let target = std::fs::read_link(self.local(&current))?;
                current = resolve_link(&current, &target);
                continue;
            }
            let kind = if ft.is_dir() {
                FileKind::Dir
            } else if ft.is_file() {
                FileKind::File
            } else if ft.is_block_device() {
                FileKind::Block
            } else {
                FileKind::Other
            };
            return Ok(FileInfo {
                kind,
                dev: split(meta.dev()),
                rdev: split(meta.rdev()),
                symlink,
            });
        }
        Err(io::Error::other("too many levels of symbolic links"))
    }

    fn statvfs(&self, path: &Path) -> io::Result<FsUsage> {
        let st = statvfs(&self.local(path)).map_err(io::Error::from)?;
        let frsize = st.fragment_size() as u64;
        let blocks = st.blocks() as u64;
        Ok(FsUsage {
            size: blocks * frsize,
            available: st.blocks_available() as u64 * frsize,
            used: blocks.saturating_sub(st.blocks_free() as u64) * frsize,
            inodes: st.files() as u64,
            inodes_free: st.files_free() as u64,
        })
    }
}
