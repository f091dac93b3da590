//! What a scrub does to its node, behind one trait so that the scrub's decisions can be
//! tested on a fixture: the volume's tree is walked and deleted through directory handles
//! (never by path), and a block device is discarded or zeroed with util-linux `blkdiscard`.
//!
//! ```text
//!  cleanup::wipe ─► ScrubHost::{open_root, list, stat_at, open_at, unlink_at, move_at} ─┬─► RealHost: openat2/fstatat/unlinkat/renameat2
//!  cleanup::block ─► ScrubHost::blkdiscard ──────────────────────────────────────────────┤
//!                                                                                        └─► fixture::FixtureVolume (tests): an in-memory tree
//! ```
//!
//! Errors are `errno` values, as the kernel gives them: the scrub's messages show them as is.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// `stat` of a directory entry, not following symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryStat {
    /// Device of the filesystem holding it (`st_dev`) as (major, minor).
    pub dev: (u32, u32),
    /// Its inode.
    pub ino: u64,
    /// A directory (a symlink to one is not).
    pub dir: bool,
}

/// How `blkdiscard` ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// It exited with status 0.
    pub success: bool,
    /// Its exit status, for messages (`exit status: 1`).
    pub status: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

/// The writes of a scrub, on host paths and open directories.
pub trait ScrubHost {
    /// An open directory.
    type Dir;

    /// How this process names host path `path` (`<host-root>/<path>`), for messages.
    fn local_path(&self, path: &Path) -> PathBuf;
    /// Open the directory at host path `path`, refusing a symlink (`O_NOFOLLOW`).
    fn open_root(&self, path: &Path) -> nix::Result<Self::Dir>;
    /// Open `dir` afresh (`openat(dir, ".")`), so a listing starts from the beginning.
    fn reopen(&self, dir: &Self::Dir) -> nix::Result<Self::Dir>;
    /// `fstat` of an open directory.
    fn stat_dir(&self, dir: &Self::Dir) -> nix::Result<EntryStat>;
    /// The names in `dir`, without `.` and `..`.
    fn list(&self, dir: &mut Self::Dir) -> nix::Result<Vec<CString>>;
    /// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
    fn stat_at(&self, dir: &Self::Dir, name: &CStr) -> nix::Result<EntryStat>;
    /// Open the directory `name` in `dir`, refusing a symlink (`O_NOFOLLOW`) and a mount
    /// point (`EXDEV`: `openat2` with `RESOLVE_NO_XDEV`).
    fn open_at(&self, dir: &Self::Dir, name: &CStr) -> nix::Result<Self::Dir>;
    /// Remove `name` from `dir` (`unlinkat`, with `AT_REMOVEDIR` when `is_dir`); a symlink
    /// is removed, never its target.
    fn unlink_at(&self, dir: &Self::Dir, name: &CStr, is_dir: bool) -> nix::Result<()>;
    /// Move `name` of `from` to `to_name` in `to`, never replacing an entry
    /// (`renameat2(RENAME_NOREPLACE)`).
    fn move_at(
        &self,
        from: &Self::Dir,
        name: &CStr,
        to: &Self::Dir,
        to_name: &CStr,
    ) -> nix::Result<()>;
    /// Run `blkdiscard [--zeroout] <device>` on the block device at host path `device`.
    fn blkdiscard(&self, device: &Path, zero: bool) -> std::io::Result<CommandOutput>;
}
