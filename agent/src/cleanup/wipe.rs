//! Wipe: delete everything inside a filesystem volume's directory, without ever leaving it.
//!
//! ```text
//!  open(root, O_DIRECTORY|O_NOFOLLOW) ─► fstat: st_dev must be the volume's ─► walk by fd:
//!    entry ──fstatat(AT_SYMLINK_NOFOLLOW)──► directory on the same st_dev ─► openat(O_NOFOLLOW), recheck, descend
//!                                        ├─► another st_dev, or in the mount table ─► a mount: left alone, reported
//!                                        └─► anything else (symlinks included) ─► unlinkat (the link, never its target)
//! ```
//!
//! Every step is relative to an open directory descriptor, so a symlink swapped in for a
//! directory during the walk makes `openat(O_NOFOLLOW)` fail instead of redirecting the walk;
//! `.` and `..` are never followed. A directory is opened with `RESOLVE_NO_XDEV`, so a mount
//! that appears during the walk (after the mount table was read), even a bind mount of the
//! volume's own filesystem, fails the open (`EXDEV`) and is left alone and reported, as is an
//! entry whose removal fails with `EBUSY` (a mount point). `agent/tests/scrub_race.rs` races
//! all of this. The root directory itself stays (it is the mount point),
//! and so does a `lost+found` directly in it (e2fsck needs it; its contents are deleted).
//! Directories deeper than [`MAX_DEPTH`] are moved up into the root (same filesystem, a
//! `rename` with no replace) and wiped on the next pass, so no tree can exhaust descriptors.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::host::{EntryStat, ScrubHost};

/// Directory descriptors held open at once by one walk (one per level).
pub const MAX_DEPTH: usize = 64;
/// Problems named in a message; the rest are counted.
const MAX_NAMED: usize = 5;
/// The ext2/3/4 recovery directory, kept (emptied) at the volume's root.
const LOST_FOUND: &str = "lost+found";

/// What a finished wipe did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wiped {
    /// Non-directories removed (files, symlinks, sockets, …).
    pub files: u64,
    /// Directories removed.
    pub dirs: u64,
    /// Mount points found inside the volume and left alone, relative to its root.
    pub mounts: Vec<PathBuf>,
    /// Entries that could not be removed, with the reason.
    pub problems: Vec<String>,
}

impl Wiped {
    /// Whether the volume is now empty (but for `lost+found`).
    pub fn clean(&self) -> bool {
        self.mounts.is_empty() && self.problems.is_empty()
    }

    /// What happened, for the result's message. `root` is the volume's host path.
    pub fn message(&self, root: &Path) -> String {
        let mut text = format!(
            "deleted {} and {} inside {}",
            count(self.files, "file", "files"),
            count(self.dirs, "directory", "directories"),
            root.display()
        );
        if !self.mounts.is_empty() {
            text += &format!(
                "; left {} mount point(s) inside the volume alone: {} (a scrub never enters another filesystem: unmount them, then restart the agent to scrub again)",
                self.mounts.len(),
                named(
                    self.mounts
                        .iter()
                        .map(|m| root.join(m).display().to_string())
                )
            );
        }
        if !self.problems.is_empty() {
            text += &format!(
                "; could not delete {} entries: {}",
                self.problems.len(),
                named(self.problems.iter().cloned())
            );
        }
        text
    }
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn named(items: impl ExactSizeIterator<Item = String>) -> String {
    let total = items.len();
    let mut text: Vec<String> = items.take(MAX_NAMED).collect();
    if total > MAX_NAMED {
        text.push(format!("and {} more", total - MAX_NAMED));
    }
    text.join(", ")
}

/// Why a wipe did not start; nothing was touched.
#[derive(Debug, PartialEq, Eq)]
pub struct NotStarted(pub String);

/// Delete everything inside the directory at host path `path` of `host`, whose filesystem must
/// be device `dev`. `nested` are mount points inside it (relative paths, from the mount
/// table): they are never touched, not even `stat`ed (one may be a hung mount).
pub fn wipe<H: ScrubHost>(
    host: &H,
    path: &Path,
    dev: (u32, u32),
    nested: &HashSet<PathBuf>,
) -> Result<Wiped, NotStarted> {
    let local = host.local_path(path);
    let root = host.open_root(path).map_err(|e| {
        NotStarted(format!(
            "cannot open the volume directory {} (a symlink is never followed): {e}",
            local.display()
        ))
    })?;
    let st = host
        .stat_dir(&root)
        .map_err(|e| NotStarted(format!("cannot stat {}: {e}", local.display())))?;
    if st.dev != dev {
        return Err(NotStarted(format!(
            "{} is on device {}:{}, not on the volume's {}:{} (the mount changed)",
            local.display(),
            st.dev.0,
            st.dev.1,
            dev.0,
            dev.1
        )));
    }
    let mut walk = Walk {
        host,
        root,
        dev: st.dev,
        nested,
        out: Wiped::default(),
        moved: 0,
    };
    // NB: each pass either finishes or moves over-deep directories up into the root; every
    // move shortens a chain by MAX_DEPTH levels, so the passes end.
    loop {
        walk.moved = 0;
        walk.pass();
        if walk.moved == 0 {
            return Ok(walk.out);
        }
    }
}

struct Walk<'a, H: ScrubHost> {
    host: &'a H,
    root: H::Dir,
    dev: (u32, u32),
    nested: &'a HashSet<PathBuf>,
    out: Wiped,
    moved: u64,
}

/// One open directory of the walk.
struct Frame<D> {
    dir: D,
    /// Its name in the parent (empty for the root).
    name: CString,
    /// Its path relative to the root, for messages and the nested-mount check.
    rel: PathBuf,
    /// Entries still to handle.
    names: Vec<CString>,
    /// Something inside stays, so this directory stays too.
    kept: bool,
    /// Keep this directory itself (`lost+found` at the root).
    keep_self: bool,
}

impl<H: ScrubHost> Walk<'_, H> {
    fn problem(&mut self, rel: &Path, what: impl std::fmt::Display) {
        self.out.problems.push(format!("{}: {what}", rel.display()));
    }

    fn frame(&mut self, mut dir: H::Dir, name: CString, rel: PathBuf) -> Option<Frame<H::Dir>> {
        match self.host.list(&mut dir) {
            Ok(names) => Some(Frame {
                dir,
                name,
                rel,
                names,
                kept: false,
                keep_self: false,
            }),
            Err(e) => {
                self.problem(&rel, format!("cannot list: {e}"));
                None
            }
        }
    }

    fn pass(&mut self) {
        // NB: "." opens a new description of the root, so each pass lists it from the start.
        let root = match self.host.reopen(&self.root) {
            Ok(dir) => dir,
            Err(e) => return self.problem(Path::new("."), format!("cannot open: {e}")),
        };
        let Some(first) = self.frame(root, CString::default(), PathBuf::new()) else {
            return;
        };
        let mut stack = vec![first];
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.names.pop() else {
                let Some(done) = stack.pop() else { break };
                self.leave(&mut stack, done);
                continue;
            };
            let rel = top.rel.join(OsStr::from_bytes(name.to_bytes()));
            let depth = stack.len();
            match self.entry(&stack, &name, &rel, depth) {
                Step::Done => {}
                Step::Kept => {
                    if let Some(top) = stack.last_mut() {
                        top.kept = true;
                    }
                }
                Step::Descend(dir) => {
                    let at_root = depth == 1;
                    if let Some(mut frame) = self.frame(dir, name, rel) {
                        frame.keep_self = at_root && frame.name.to_bytes() == LOST_FOUND.as_bytes();
                        stack.push(frame);
                    } else if let Some(top) = stack.last_mut() {
                        top.kept = true;
                    }
                }
            }
        }
    }

    /// A directory is done: remove it from its parent, unless something in it stays.
    fn leave(&mut self, stack: &mut [Frame<H::Dir>], done: Frame<H::Dir>) {
        let Some(parent) = stack.last_mut() else {
            return; // the root itself stays
        };
        if done.kept {
            parent.kept = true;
        } else if !done.keep_self {
            drop(done.dir);
            match self.host.unlink_at(&parent.dir, done.name.as_c_str(), true) {
                Ok(()) => self.out.dirs += 1,
                Err(Errno::ENOENT) => {}
                Err(Errno::EBUSY) => {
                    // NB: emptied, then something was mounted on it.
                    parent.kept = true;
                    self.out.mounts.push(done.rel);
                }
                Err(e) => {
                    parent.kept = true;
                    self.out
                        .problems
                        .push(format!("{}: {e}", done.rel.display()));
                }
            }
        }
    }

    /// Handle one entry of the directory on top of `stack`.
    fn entry(
        &mut self,
        stack: &[Frame<H::Dir>],
        name: &CStr,
        rel: &Path,
        depth: usize,
    ) -> Step<H::Dir> {
        let Some(parent) = stack.last() else {
            return Step::Kept;
        };
        let dir = &parent.dir;
        if self.nested.contains(rel) {
            self.out.mounts.push(rel.to_path_buf());
            return Step::Kept;
        }
        let st = match self.host.stat_at(dir, name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Step::Done,
            Err(e) => {
                self.problem(rel, format!("cannot stat: {e}"));
                return Step::Kept;
            }
        };
        if st.dev != self.dev {
            self.out.mounts.push(rel.to_path_buf());
            return Step::Kept;
        }
        if !st.dir {
            return match self.host.unlink_at(dir, name, false) {
                Ok(()) => {
                    self.out.files += 1;
                    Step::Done
                }
                Err(Errno::ENOENT) => Step::Done,
                Err(Errno::EBUSY) => {
                    // NB: a file bind-mounted over this one.
                    self.out.mounts.push(rel.to_path_buf());
                    Step::Kept
                }
                Err(e) => {
                    self.problem(rel, e);
                    Step::Kept
                }
            };
        }
        if depth >= MAX_DEPTH {
            return self.move_up(dir, name, rel);
        }
        self.descend(dir, name, rel, st)
    }

    /// Open directory `name` (whose `stat` was `st`) to empty it, if it is still that one.
    fn descend(&mut self, dir: &H::Dir, name: &CStr, rel: &Path, st: EntryStat) -> Step<H::Dir> {
        let opened = match self.host.open_at(dir, name) {
            Ok(opened) => opened,
            Err(Errno::ENOENT) => return Step::Done,
            // NB: a mount appeared there since the mount table was read (even a bind mount
            // of this very filesystem, which `st_dev` cannot tell): never entered.
            Err(Errno::EXDEV) => {
                self.out.mounts.push(rel.to_path_buf());
                return Step::Kept;
            }
            Err(e) => {
                // ELOOP/ENOTDIR: it was replaced by a symlink or a file meanwhile.
                self.problem(rel, format!("cannot open as a directory: {e}"));
                return Step::Kept;
            }
        };
        match self.host.stat_dir(&opened) {
            Ok(now) if now.dev == self.dev && now.ino == st.ino => Step::Descend(opened),
            Ok(now) if now.dev != self.dev => {
                self.out.mounts.push(rel.to_path_buf());
                Step::Kept
            }
            Ok(_) => {
                self.problem(rel, "replaced during the scrub");
                Step::Kept
            }
            Err(e) => {
                self.problem(rel, format!("cannot stat: {e}"));
                Step::Kept
            }
        }
    }

    /// Move an over-deep directory into the root under a fresh name; the next pass wipes it.
    fn move_up(&mut self, dir: &H::Dir, name: &CStr, rel: &Path) -> Step<H::Dir> {
        for n in 0..1000u32 {
            let target = format!(".volpool-scrub-{}-{n}", self.out.dirs + self.moved);
            let Ok(target) = CString::new(target) else {
                break;
            };
            match self.host.move_at(dir, name, &self.root, target.as_c_str()) {
                Ok(()) => {
                    self.moved += 1;
                    return Step::Done;
                }
                Err(Errno::EEXIST) => continue,
                Err(Errno::ENOENT) => return Step::Done,
                Err(e) => {
                    self.problem(rel, format!("nested too deep, and cannot move it up: {e}"));
                    return Step::Kept;
                }
            }
        }
        self.problem(rel, "nested too deep, and no free name to move it up to");
        Step::Kept
    }
}

enum Step<D> {
    /// Removed, or already gone.
    Done,
    /// Stays (a mount point or a problem); its parent stays too.
    Kept,
    /// A directory of the volume to empty, then remove.
    Descend(D),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::RealHost;
    use nix::sys::stat::{major, minor};
    use std::os::unix::fs::{MetadataExt, symlink};

    /// [`super::wipe`] on this machine, by this process's paths.
    fn wipe(local: &Path, dev: (u32, u32), nested: &HashSet<PathBuf>) -> Result<Wiped, NotStarted> {
        super::wipe(&RealHost::new("/"), local, dev, nested)
    }

    fn dev(path: &Path) -> (u32, u32) {
        let st = std::fs::metadata(path).expect("stat");
        (major(st.dev()) as u32, minor(st.dev()) as u32)
    }

    #[test]
    fn a_directory_is_emptied_through_descriptors_and_links_are_not_followed() {
        let base = std::env::temp_dir().join(format!("volpool-wipe-unit-{}", std::process::id()));
        let (vol, outside) = (base.join("vol"), base.join("outside"));
        std::fs::create_dir_all(vol.join("a/b")).expect("mkdir");
        std::fs::create_dir_all(vol.join("lost+found")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("keep"), "keep").expect("write");
        std::fs::write(vol.join("a/b/f"), "x").expect("write");
        std::fs::write(vol.join("lost+found/r"), "x").expect("write");
        symlink(&outside, vol.join("a/dir-link")).expect("symlink");
        symlink("..", vol.join("up")).expect("symlink");
        let mut deep = vol.join("deep");
        for _ in 0..(MAX_DEPTH * 2 + 3) {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).expect("deep");
        std::fs::write(deep.join("f"), "x").expect("write");

        let done = wipe(&vol, dev(&vol), &HashSet::new()).expect("wipe starts");
        let left: Vec<_> = std::fs::read_dir(&vol)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        let lost_found_empty = std::fs::read_dir(vol.join("lost+found"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        let kept = std::fs::read_to_string(outside.join("keep")).ok();
        let _ = std::fs::remove_dir_all(&base);
        assert!(done.clean(), "{done:?}");
        assert_eq!(left, ["lost+found"]);
        assert!(lost_found_empty);
        assert_eq!(kept.as_deref(), Some("keep"));
        assert_eq!(done.files, 5, "2 files, 2 links, the deep file");
    }

    #[test]
    fn a_root_on_another_device_or_a_symlink_is_not_started() {
        let base = std::env::temp_dir().join(format!("volpool-wipe-root-{}", std::process::id()));
        std::fs::create_dir_all(base.join("real")).expect("mkdir");
        std::fs::write(base.join("real/f"), "x").expect("write");
        symlink(base.join("real"), base.join("link")).expect("symlink");
        let d = dev(&base);
        let link = wipe(&base.join("link"), d, &HashSet::new());
        let other = wipe(&base.join("real"), (d.0, d.1 + 1), &HashSet::new());
        let survived = base.join("real/f").exists();
        let _ = std::fs::remove_dir_all(&base);
        assert!(link.is_err(), "{link:?}");
        assert!(other.is_err_and(|e| e.0.contains("the mount changed")));
        assert!(survived);
    }

    #[test]
    fn messages_name_the_first_problems_and_count_the_rest() {
        let done = Wiped {
            files: 1,
            dirs: 2,
            mounts: vec!["m".into()],
            problems: (0..7)
                .map(|i| format!("p{i}: Operation not permitted"))
                .collect(),
        };
        let text = done.message(Path::new("/mnt/disks/v"));
        assert!(text.starts_with("deleted 1 file and 2 directories inside /mnt/disks/v"));
        assert!(text.contains("/mnt/disks/v/m"), "{text}");
        assert!(
            text.contains("p4: Operation") && !text.contains("p5"),
            "{text}"
        );
        assert!(text.contains("and 2 more"), "{text}");
        assert!(!done.clean());
    }
}
