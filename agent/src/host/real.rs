//! [`Host`] and [`ScrubHost`] over the real node, seen through `--host-root` (`/` when run
//! directly, `/host` in a pod that mounts the node's root there).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, RenameFlags, ResolveFlag, openat, openat2, renameat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, major, minor};
use nix::sys::statvfs::statvfs;
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::scrub::{CommandOutput, EntryStat, ScrubHost};
use super::{BLKDISCARD, FileInfo, FileKind, FsUsage, Host, resolve_link};

/// Symlink hops followed before giving up (as the kernel's `ELOOP`).
const MAX_LINKS: usize = 40;
/// What `read_at` reserves up front; a longer read grows the buffer as it goes.
const READ_AT_RESERVE: usize = 64 * 1024;

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

    /// Where the node's root is in this process's view.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a host path is in this process's view.
    pub fn local(&self, path: &Path) -> PathBuf {
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

    fn read_mount_table(&self) -> io::Result<Vec<u8>> {
        std::fs::read(&self.mount_table)
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = File::open(self.local(path))?;
        file.seek(SeekFrom::Start(offset))?;
        // NB: `len` is a cap (16 MiB for a kernel config), not a size: reserving it would map
        // that much, and glibc, once it frees such a block, serves every smaller allocation from
        // its heaps for good, where freed memory stays in the RSS.
        let mut buf = Vec::with_capacity(len.min(READ_AT_RESERVE));
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

    fn birth_time(&self, path: &Path) -> io::Result<u128> {
        let created = std::fs::metadata(self.local(path))?.created()?;
        created
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .map_err(io::Error::other)
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

/// Directories of a scrub: read-only, never through a symlink, not inherited by commands.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// `openat(O_NOFOLLOW)` for kernels before 5.6 (no `openat2`): the opened directory must be
/// in the mount `dir` is in (`mnt_id` of `/proc/self/fdinfo`, since Linux 3.15), else EXDEV.
fn open_in_same_mount(dir: &Dir, name: &CStr) -> nix::Result<OwnedFd> {
    let fd = openat(dir.as_fd(), name, DIR_FLAGS, Mode::empty())?;
    if mount_id(dir.as_fd())? != mount_id(fd.as_fd())? {
        return Err(Errno::EXDEV);
    }
    Ok(fd)
}

/// The mount an open file is in, from `/proc/self/fdinfo/<fd>`.
fn mount_id(fd: BorrowedFd<'_>) -> nix::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))?;
    parse_mount_id(&text).ok_or(Errno::EIO)
}

/// `mnt_id:` of an fdinfo text.
fn parse_mount_id(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

fn entry_stat(st: &FileStat) -> EntryStat {
    EntryStat {
        dev: split(st.st_dev),
        ino: st.st_ino,
        dir: SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR,
    }
}

impl ScrubHost for RealHost {
    type Dir = Dir;

    fn local_path(&self, path: &Path) -> PathBuf {
        self.local(path)
    }

    fn open_root(&self, path: &Path) -> nix::Result<Dir> {
        let fd = nix::fcntl::open(&self.local(path), DIR_FLAGS, Mode::empty())?;
        Dir::from_fd(fd)
    }

    fn reopen(&self, dir: &Dir) -> nix::Result<Dir> {
        openat(dir.as_fd(), c".", DIR_FLAGS, Mode::empty()).and_then(Dir::from_fd)
    }

    fn stat_dir(&self, dir: &Dir) -> nix::Result<EntryStat> {
        fstat(dir.as_fd()).map(|st| entry_stat(&st))
    }

    fn list(&self, dir: &mut Dir) -> nix::Result<Vec<CString>> {
        let mut names = Vec::new();
        for entry in dir.iter() {
            let name = entry?.file_name().to_owned();
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn stat_at(&self, dir: &Dir, name: &CStr) -> nix::Result<EntryStat> {
        fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).map(|st| entry_stat(&st))
    }

    fn open_at(&self, dir: &Dir, name: &CStr) -> nix::Result<Dir> {
        // NB: RESOLVE_NO_XDEV makes entering a mount point fail (EXDEV) as part of the open
        // itself, so a mount that appears between the walk's `fstatat` and this open, even a
        // bind mount of the volume's own filesystem (same st_dev), is never entered.
        let how = OpenHow::new()
            .flags(DIR_FLAGS)
            .resolve(ResolveFlag::RESOLVE_NO_XDEV | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = match openat2(dir.as_fd(), name, how) {
            Err(Errno::ENOSYS) => open_in_same_mount(dir, name)?,
            other => other?,
        };
        Dir::from_fd(fd)
    }

    fn unlink_at(&self, dir: &Dir, name: &CStr, is_dir: bool) -> nix::Result<()> {
        let flags = if is_dir {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        unlinkat(dir.as_fd(), name, flags)
    }

    fn move_at(&self, from: &Dir, name: &CStr, to: &Dir, to_name: &CStr) -> nix::Result<()> {
        renameat2(
            from.as_fd(),
            name,
            to.as_fd(),
            to_name,
            RenameFlags::RENAME_NOREPLACE,
        )
    }

    fn blkdiscard(&self, device: &Path, zero: bool) -> io::Result<CommandOutput> {
        let mut cmd = Command::new(BLKDISCARD);
        if zero {
            cmd.arg("--zeroout");
        }
        let out = cmd.arg(self.local(device)).output()?;
        Ok(CommandOutput {
            success: out.status.success(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &str) -> Dir {
        RealHost::new("/").open_root(Path::new(path)).expect("open")
    }

    #[test]
    fn a_scrub_never_opens_its_way_into_another_mount() {
        let host = RealHost::new("/");
        let base = std::env::temp_dir().join(format!("volpool-real-{}", std::process::id()));
        std::fs::create_dir_all(base.join("sub")).expect("mkdir");
        let inside = host.open_at(&dir(&base.to_string_lossy()), c"sub");
        let fallback = open_in_same_mount(&dir(&base.to_string_lossy()), c"sub");
        let _ = std::fs::remove_dir_all(&base);
        assert!(inside.is_ok() && fallback.is_ok());
        // NB: /proc is a mount of its own on every Linux machine.
        assert_eq!(host.open_at(&dir("/"), c"proc").err(), Some(Errno::EXDEV));
        assert_eq!(
            open_in_same_mount(&dir("/"), c"proc").err(),
            Some(Errno::EXDEV)
        );
    }

    #[test]
    fn the_mount_id_is_read_from_fdinfo() {
        let text = "pos:\t0\nflags:\t02100000\nmnt_id:\t27\nino:\t2\n";
        assert_eq!(parse_mount_id(text), Some(27));
        assert_eq!(parse_mount_id("pos:\t0\n"), None);
    }

    #[test]
    fn a_mount_point_that_is_not_utf8_does_not_hide_the_table() {
        use crate::host::Host;
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        // NB: the kernel writes path bytes raw but for space, tab, newline and backslash; read
        // as a string, one Latin-1 mount point made the whole table unreadable.
        let root = volpool_testkit::TempDir::new("volpool-mountinfo").expect("temp dir");
        std::fs::create_dir_all(root.0.join("proc/1")).expect("mkdir");
        std::fs::write(
            root.0.join("proc/1/mountinfo"),
            b"1 0 0:30 / /mnt/disks/caf\xe9 rw - tmpfs t rw\n2 0 7:0 / /mnt/disks/vol1 rw - ext4 /dev/loop0 rw\n",
        )
        .expect("write");
        let table = RealHost::new(&root.0)
            .mount_table()
            .expect("the table is read");
        let point = OsString::from_vec(b"/mnt/disks/caf\xe9".to_vec());
        assert_eq!(table.at(Path::new(&point)).map(|m| m.minor), Some(30));
        assert!(table.at(Path::new("/mnt/disks/vol1")).is_some());
    }
}
