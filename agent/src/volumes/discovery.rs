//! What is in a local pool's discovery directory, and whether each entry can be offered.
//!
//! ```text
//!  <discoveryDir>/* (namePattern) ─┬─ in the host mount table ────────► Mount   (Filesystem pools)
//!                                  ├─ a block device (symlinks followed) ► Block (Block pools)
//!                                  └─ anything else ──────────────────► Rejected(state, message)
//! ```
//!
//! An entry is a mount point when the host mount table (`/proc/1/mountinfo`) has a mount at
//! its path. That is the kernel's own answer: it agrees with comparing `st_dev` with the
//! parent's, and also counts a directory bind-mounted onto itself (the usual way to offer a
//! directory of the root disk). Mount points are never `stat`ed here, so a hung mount cannot
//! stall discovery; only the probe workers touch them.

use std::path::{Path, PathBuf};

use volpool_api::{VolumeMode, VolumeState};

use crate::host::{FileKind, Host, Mount, MountTable, resolve_link};
use crate::pools::LocalPool;

/// What an entry turned out to be.
#[derive(Clone, Debug)]
pub enum Found {
    /// A mount point (Filesystem pools).
    Mount(Mount),
    /// A block device (Block pools).
    Block {
        /// Its device numbers.
        dev: (u32, u32),
        /// The device node, symlinks resolved.
        device: PathBuf,
    },
    /// Not offered; the state and message say why.
    Rejected {
        /// NotMountPoint or Error.
        state: VolumeState,
        /// What the user should know.
        message: String,
    },
}

/// One entry of a discovery directory.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The entry's name inside the directory.
    pub name: String,
    /// Its host path.
    pub path: PathBuf,
    /// What it is.
    pub found: Found,
}

/// Every entry of `pool`'s discovery directory whose name matches the pool's pattern. `Err`
/// (a message) when the directory itself cannot be listed.
pub fn discover(
    host: &dyn Host,
    mounts: &MountTable,
    pool: &LocalPool,
) -> Result<Vec<Entry>, String> {
    let names = host.list_dir(&pool.dir).map_err(|e| {
        format!(
            "pool {}: cannot list discovery dir {}: {e}",
            pool.name,
            pool.dir.display()
        )
    })?;
    Ok(names
        .into_iter()
        .filter(|name| pool.pattern.matches(name))
        .map(|name| {
            let path = pool.dir.join(&name);
            let found = classify(host, mounts, pool.mode, &name, &path);
            Entry { name, path, found }
        })
        .collect())
}

fn rejected(state: VolumeState, message: impl Into<String>) -> Found {
    Found::Rejected {
        state,
        message: message.into(),
    }
}

fn classify(
    host: &dyn Host,
    mounts: &MountTable,
    mode: VolumeMode,
    name: &str,
    path: &Path,
) -> Found {
    if let Some(mount) = mounts.at(path) {
        return match mode {
            VolumeMode::Filesystem => Found::Mount(mount.clone()),
            VolumeMode::Block => rejected(
                VolumeState::NotMountPoint,
                format!(
                    "a mounted {} filesystem: a Block pool offers block devices only",
                    mount.fs_type
                ),
            ),
        };
    }
    let info = match host.stat(path) {
        Ok(info) => info,
        Err(e) => return rejected(VolumeState::Error, format!("cannot stat: {e}")),
    };
    match (mode, info.kind) {
        (VolumeMode::Block, FileKind::Block) => {
            if let Some(m) = mounts.with_device(info.rdev.0, info.rdev.1).next() {
                return rejected(
                    VolumeState::Error,
                    format!(
                        "block device {}:{} is mounted at {}: a device in use is never offered",
                        info.rdev.0,
                        info.rdev.1,
                        m.mount_point.display()
                    ),
                );
            }
            Found::Block {
                dev: info.rdev,
                device: resolve(host, path),
            }
        }
        (VolumeMode::Filesystem, FileKind::Block) => rejected(
            VolumeState::NotMountPoint,
            "a block device: only a pool with volumeMode Block offers it; mount a filesystem to offer it here",
        ),
        (_, FileKind::Dir) if name == "lost+found" => rejected(
            VolumeState::NotMountPoint,
            "lost+found: the filesystem's recovery directory, never a volume",
        ),
        (VolumeMode::Filesystem, FileKind::Dir) => rejected(
            VolumeState::NotMountPoint,
            "a plain directory, not a mount point: mount a filesystem on it (or bind-mount it onto itself) to offer it",
        ),
        (VolumeMode::Filesystem, _) => rejected(
            VolumeState::NotMountPoint,
            "not a directory: only mount points are offered",
        ),
        (VolumeMode::Block, _) => rejected(
            VolumeState::NotMountPoint,
            "not a block device: a Block pool offers block devices (or symlinks to them) only",
        ),
    }
}

/// Follow symlinks (absolute targets are host paths) to the device node itself.
fn resolve(host: &dyn Host, path: &Path) -> PathBuf {
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        match host.read_link(&current) {
            Ok(target) => current = resolve_link(&current, &target),
            Err(_) => break,
        }
    }
    current
}
