//! [`Host`] for unit tests: files and symlinks from a tree under `testdata/`, plus a table of
//! what `stat` and `statvfs` would say for paths a fixture tree cannot hold (device nodes,
//! mount points).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::{FileInfo, FileKind, FsUsage, Host, RealHost, resolve_link};

/// A fake node: a fixture tree plus stat/statvfs answers.
pub struct FixtureHost {
    tree: RealHost,
    mountinfo: PathBuf,
    stats: HashMap<PathBuf, FileInfo>,
    usage: HashMap<PathBuf, FsUsage>,
}

impl FixtureHost {
    /// A host whose files are under `testdata/<tree>` and mount table is `testdata/<mountinfo>`.
    pub fn new(tree: &str, mountinfo: &str) -> Self {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        FixtureHost {
            tree: RealHost::new(testdata.join(tree)),
            mountinfo: testdata.join(mountinfo),
            stats: HashMap::new(),
            usage: HashMap::new(),
        }
    }

    /// Make `stat(path)` answer `kind` with device `rdev`.
    pub fn with_stat(mut self, path: &str, kind: FileKind, rdev: (u32, u32)) -> Self {
        let info = FileInfo {
            kind,
            dev: (0, 1),
            rdev,
            symlink: false,
        };
        self.stats.insert(PathBuf::from(path), info);
        self
    }

    /// Make `statvfs(path)` answer `usage`.
    pub fn with_usage(mut self, path: &str, usage: FsUsage) -> Self {
        self.usage.insert(PathBuf::from(path), usage);
        self
    }
}

impl Host for FixtureHost {
    fn mount_table_path(&self) -> PathBuf {
        self.mountinfo.clone()
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        if path == self.mountinfo {
            return std::fs::read_to_string(path);
        }
        self.tree.read_to_string(path)
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.tree.read_at(path, offset, len)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = self.tree.list_dir(path).unwrap_or_default();
        if let Ok(table) = self.mount_table() {
            names.extend(
                table
                    .points()
                    .filter(|p| p.parent() == Some(path))
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
            );
        }
        for p in self.stats.keys() {
            if p.parent() == Some(path)
                && let Some(name) = p.file_name()
            {
                names.push(name.to_string_lossy().into_owned());
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        self.tree.read_link(path)
    }

    fn stat(&self, path: &Path) -> io::Result<FileInfo> {
        if let Some(info) = self.stats.get(path) {
            return Ok(*info);
        }
        match self.tree.read_link(path) {
            Ok(target) => {
                let mut info = self.stat(&resolve_link(path, &target))?;
                info.symlink = true;
                Ok(info)
            }
            Err(_) => self.tree.stat(path),
        }
    }

    fn statvfs(&self, path: &Path) -> io::Result<FsUsage> {
        self.usage
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}
