//! The export behind an NFS pool, as the few operations the controller needs: list the pool's
//! root, make a directory, rename one, remove one with its contents, read the space.
//!
//! ```text
//!  spec.nfs ──► Export::for_pool ─┬─► Nfs3     (portmap → MOUNT → NFSv3 over TCP, no kernel mount)
//!                                 └─► Mounted  (plain file operations under mountedPath)
//!  run.rs ──► observe (reads only) ──► ExportView ──► plan::nfs (pure) ──► ExportOp ──► execute
//! ```
//!
//! Every name is one path component directly under the pool's root (checked here), and a tree
//! is removed without following symlinks or crossing into another filesystem, so nothing
//! outside the pool's root is ever touched.

mod mounted;
mod nfs3;
mod ops;
#[cfg(test)]
mod tests;

use std::time::Duration;

use volpool_api::{NfsAccess, NfsSource};

pub use mounted::Mounted;
pub use nfs3::Nfs3;
pub use ops::{Exports, execute, observe};

/// One entry directly under the pool's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// File name.
    pub name: String,
    /// Whether it is a directory (a symlink never is).
    pub is_dir: bool,
    /// Owner's uid.
    pub uid: u32,
}

/// Size and free space of the export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Total bytes.
    pub size_bytes: u64,
    /// Bytes available to the controller's user.
    pub available_bytes: u64,
}

/// A directory made (or found already there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Made {
    /// Owner's uid as the server reports it (root squash shows here).
    pub uid: u32,
}

pub use crate::error::{ExportError, FailKind};

/// Result of an export operation.
pub type ExportResult<T> = Result<T, ExportError>;

/// The operations on an export; names are single components under the pool's root.
#[allow(async_fn_in_trait)]
pub trait ExportFs {
    /// Entries directly under the root.
    async fn list(&self) -> ExportResult<Vec<Entry>>;
    /// Whether the directory `dir` holds nothing.
    async fn is_empty(&self, dir: &str) -> ExportResult<bool>;
    /// Make `dir` (an existing directory is fine) and set its mode.
    async fn make_dir(&self, dir: &str, mode: u32) -> ExportResult<Made>;
    /// Rename `from` to `to`; a missing `from` is an error of kind `Other`.
    async fn rename(&self, from: &str, to: &str) -> ExportResult<()>;
    /// Remove `dir` and everything in it; a missing `dir` is fine.
    async fn remove_tree(&self, dir: &str) -> ExportResult<()>;
    /// Size and free space.
    async fn space(&self) -> ExportResult<Space>;
    /// The uid the controller's directories should get; `None` when unknown.
    fn expected_uid(&self) -> Option<u32>;
}

/// The export of one pool, reached the way its spec says.
pub enum Export {
    /// Over the wire.
    Nfs3(Nfs3),
    /// Through a mount in the controller's pod.
    Mounted(Mounted),
}

/// Deadline of every single NFS call or file operation.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Export {
    /// The export of a pool's `spec.nfs`.
    pub fn for_pool(nfs: &NfsSource) -> Export {
        match nfs.access {
            NfsAccess::NFSv3 => Export::Nfs3(Nfs3::new(&nfs.server, &nfs.path, CALL_TIMEOUT)),
            NfsAccess::Mounted => Export::Mounted(Mounted::new(&nfs.mounted_path, CALL_TIMEOUT)),
        }
    }
}

impl ExportFs for Export {
    async fn list(&self) -> ExportResult<Vec<Entry>> {
        match self {
            Export::Nfs3(e) => e.list().await,
            Export::Mounted(e) => e.list().await,
        }
    }
    async fn is_empty(&self, dir: &str) -> ExportResult<bool> {
        match self {
            Export::Nfs3(e) => e.is_empty(dir).await,
            Export::Mounted(e) => e.is_empty(dir).await,
        }
    }
    async fn make_dir(&self, dir: &str, mode: u32) -> ExportResult<Made> {
        match self {
            Export::Nfs3(e) => e.make_dir(dir, mode).await,
            Export::Mounted(e) => e.make_dir(dir, mode).await,
        }
    }
    async fn rename(&self, from: &str, to: &str) -> ExportResult<()> {
        match self {
            Export::Nfs3(e) => e.rename(from, to).await,
            Export::Mounted(e) => e.rename(from, to).await,
        }
    }
    async fn remove_tree(&self, dir: &str) -> ExportResult<()> {
        match self {
            Export::Nfs3(e) => e.remove_tree(dir).await,
            Export::Mounted(e) => e.remove_tree(dir).await,
        }
    }
    async fn space(&self) -> ExportResult<Space> {
        match self {
            Export::Nfs3(e) => e.space().await,
            Export::Mounted(e) => e.space().await,
        }
    }
    fn expected_uid(&self) -> Option<u32> {
        match self {
            Export::Nfs3(e) => e.expected_uid(),
            Export::Mounted(e) => e.expected_uid(),
        }
    }
}

/// Refuse anything but one plain path component: no `/`, `.`, `..` or empty name.
pub fn check_name(name: &str) -> ExportResult<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(ExportError::new(
            FailKind::Other,
            format!(
                "refusing the name {name:?}: only a single directory name under the pool's root is allowed"
            ),
        ));
    }
    Ok(())
}
