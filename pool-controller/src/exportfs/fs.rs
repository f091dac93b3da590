//! What every export offers: the entry, space and result types, the `ExportFs` trait and the
//! name check, below both implementations so neither imports the module that chooses them.

use std::time::Duration;

pub use crate::error::{ExportError, FailKind};

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

/// Deadline of every single NFS call or file operation.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

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

#[cfg(test)]
mod props;
