//! [`ScrubHost`] for unit tests: an in-memory tree of directories, files and symlinks, each on
//! a device, that can be told to refuse deleting some paths, which directories became mount
//! points after the mount table was read, and what `blkdiscard` answers.
//! What is left, and which `blkdiscard` ran, can be read back.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;

use super::scrub::{CommandOutput, EntryStat, ScrubHost};

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    File,
    Symlink,
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    dev: (u32, u32),
    ino: u64,
}

/// An in-memory node for scrubs, by host path.
#[derive(Default)]
pub struct MemFs {
    nodes: Mutex<BTreeMap<PathBuf, Node>>,
    refuse: HashSet<PathBuf>,
    mounted: HashSet<PathBuf>,
    discard: Option<CommandOutput>,
    discarded: Mutex<Vec<(PathBuf, bool)>>,
    next_ino: u64,
}

impl MemFs {
    /// An empty node.
    pub fn new() -> Self {
        MemFs::default()
    }

    fn add(mut self, path: &str, kind: Kind, dev: (u32, u32)) -> Self {
        self.next_ino += 1;
        let node = Node {
            kind,
            dev,
            ino: self.next_ino,
        };
        self.nodes
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .insert(PathBuf::from(path), node);
        self
    }

    /// A directory on device `dev`.
    pub fn dir(self, path: &str, dev: (u32, u32)) -> Self {
        self.add(path, Kind::Dir, dev)
    }

    /// A file on device `dev`.
    pub fn file(self, path: &str, dev: (u32, u32)) -> Self {
        self.add(path, Kind::File, dev)
    }

    /// A symlink on device `dev`.
    pub fn symlink(self, path: &str, dev: (u32, u32)) -> Self {
        self.add(path, Kind::Symlink, dev)
    }

    /// Deleting `path` fails with `EPERM` (an immutable file).
    pub fn refuse_delete(mut self, path: &str) -> Self {
        self.refuse.insert(PathBuf::from(path));
        self
    }

    /// `path` is a mount point the mount table did not list (one made during the scrub):
    /// opening it as a directory of the walk fails with `EXDEV`, as `RESOLVE_NO_XDEV` does.
    pub fn mounted_meanwhile(mut self, path: &str) -> Self {
        self.mounted.insert(PathBuf::from(path));
        self
    }

    /// What `blkdiscard` answers (by default: success).
    pub fn discard_answers(mut self, output: CommandOutput) -> Self {
        self.discard = Some(output);
        self
    }

    /// Every path left, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().keys().cloned().collect()
    }

    /// Each `blkdiscard` run: the device and whether it zeroed.
    pub fn discarded(&self) -> Vec<(PathBuf, bool)> {
        self.discarded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, Node>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stat(&self, path: &Path) -> nix::Result<EntryStat> {
        let nodes = self.lock();
        let node = nodes.get(path).ok_or(Errno::ENOENT)?;
        Ok(EntryStat {
            dev: node.dev,
            ino: node.ino,
            dir: matches!(node.kind, Kind::Dir),
        })
    }

    fn open(&self, path: &Path) -> nix::Result<PathBuf> {
        match self.lock().get(path).map(|n| &n.kind) {
            None => Err(Errno::ENOENT),
            Some(Kind::Symlink) => Err(Errno::ELOOP),
            Some(Kind::File) => Err(Errno::ENOTDIR),
            Some(Kind::Dir) => Ok(path.to_path_buf()),
        }
    }
}

fn join(dir: &Path, name: &CStr) -> PathBuf {
    dir.join(OsStr::from_bytes(name.to_bytes()))
}

impl ScrubHost for MemFs {
    type Dir = PathBuf;

    fn local_path(&self, path: &Path) -> PathBuf {
        path.to_path_buf()
    }

    fn open_root(&self, path: &Path) -> nix::Result<PathBuf> {
        self.open(path)
    }

    fn reopen(&self, dir: &PathBuf) -> nix::Result<PathBuf> {
        self.open(dir)
    }

    fn stat_dir(&self, dir: &PathBuf) -> nix::Result<EntryStat> {
        self.stat(dir)
    }

    fn list(&self, dir: &mut PathBuf) -> nix::Result<Vec<CString>> {
        Ok(self
            .lock()
            .keys()
            .filter(|p| p.parent() == Some(dir.as_path()))
            .filter_map(|p| CString::new(p.file_name()?.as_bytes()).ok())
            .collect())
    }

    fn stat_at(&self, dir: &PathBuf, name: &CStr) -> nix::Result<EntryStat> {
        self.stat(&join(dir, name))
    }

    fn open_at(&self, dir: &PathBuf, name: &CStr) -> nix::Result<PathBuf> {
        let path = join(dir, name);
        if self.mounted.contains(&path) {
            return Err(Errno::EXDEV);
        }
        self.open(&path)
    }

    fn unlink_at(&self, dir: &PathBuf, name: &CStr, is_dir: bool) -> nix::Result<()> {
        let path = join(dir, name);
        if self.refuse.contains(&path) {
            return Err(Errno::EPERM);
        }
        let mut nodes = self.lock();
        let node = nodes.get(&path).ok_or(Errno::ENOENT)?;
        match (&node.kind, is_dir) {
            (Kind::Dir, false) => return Err(Errno::EISDIR),
            (Kind::File | Kind::Symlink, true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        if nodes.keys().any(|p| p.parent() == Some(path.as_path())) {
            return Err(Errno::ENOTEMPTY);
        }
        nodes.remove(&path);
        Ok(())
    }

    fn move_at(
        &self,
        from: &PathBuf,
        name: &CStr,
        to: &PathBuf,
        to_name: &CStr,
    ) -> nix::Result<()> {
        let (old, new) = (join(from, name), join(to, to_name));
        let mut nodes = self.lock();
        if nodes.contains_key(&new) {
            return Err(Errno::EEXIST);
        }
        let moved: Vec<PathBuf> = nodes
            .keys()
            .filter(|p| p.starts_with(&old))
            .cloned()
            .collect();
        if moved.is_empty() {
            return Err(Errno::ENOENT);
        }
        for path in moved {
            let Ok(rest) = path.strip_prefix(&old) else {
                continue;
            };
            let target = if rest.as_os_str().is_empty() {
                new.clone()
            } else {
                new.join(rest)
            };
            if let Some(node) = nodes.remove(&path) {
                nodes.insert(target, node);
            }
        }
        Ok(())
    }

    fn blkdiscard(&self, device: &Path, zero: bool) -> io::Result<CommandOutput> {
        self.discarded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((device.to_path_buf(), zero));
        Ok(self.discard.clone().unwrap_or(CommandOutput {
            success: true,
            status: "exit status: 0".into(),
            stderr: String::new(),
        }))
    }
}
