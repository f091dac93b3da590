//! The export behind an NFS pool, as the few operations the controller needs: list the pool's
//! root, make a directory, rename one, remove one with its contents, read the space.
//!
//! ```text
//!  spec.nfs ──► Export::for_pool ─┬─► Nfs3     (portmap → MOUNT → NFSv3 over TCP, no kernel mount)
//!                                 └─► Mounted  (plain file operations under mountedPath)
//!  run.rs ──► observe (reads only) ──► ExportView ──► plan::nfs (pure) ──► ExportOp ──► execute
//!                                                        a failed operation ──► told ──► Events (once per failure)
//! ```
//!
//! Every name is one path component directly under the pool's root (checked here), and a tree
//! is removed without following symlinks or crossing into another filesystem, so nothing
//! outside the pool's root is ever touched.

mod fs;
mod mounted;
mod nfs3;
mod ops;
#[cfg(test)]
mod tests;
mod told;

use volpool_api::{NfsAccess, NfsSource};

pub use fs::{CALL_TIMEOUT, Entry, ExportError, ExportFs, ExportResult, FailKind, Made, Space};
pub use mounted::Mounted;
pub use nfs3::Nfs3;
pub use ops::{Exports, execute, observe};

/// The export of one pool, reached the way its spec says.
pub enum Export {
    /// Over the wire.
    Nfs3(Nfs3),
    /// Through a mount in the controller's pod.
    Mounted(Mounted),
}

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
