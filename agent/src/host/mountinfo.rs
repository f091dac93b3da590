//! Parser for `/proc/<pid>/mountinfo` (proc(5)): text in, one [`Mount`] per line out.
//!
//! ```text
//!  36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//!  id par dev  root mount-point options [optional…] - fstype source super-options
//! ```
//!
//! Paths are escaped by the kernel (`\040` for a space, `\011`, `\012`, `\134`); they are
//! decoded here, so a mount point compares equal to the path `readdir` gives. Other bytes are
//! written raw, so a path need not be UTF-8: the mount point is kept as bytes.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Device major number (`st_dev` of files on this mount).
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Path inside the filesystem that is mounted here (`/` unless a bind mount of a subtree).
    pub root: String,
    /// Where it is mounted, decoded.
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `ext4`, `tmpfs`, `fuse.hangfs`.
    pub fs_type: String,
    /// Mount source, e.g. `/dev/sdb1` (decoded).
    pub source: String,
}

/// The host's mounts, indexed by mount point. When mounts are stacked on one path, the last
/// (topmost) one wins, as in the kernel.
#[derive(Clone, Debug, Default)]
pub struct MountTable {
    by_point: HashMap<PathBuf, Mount>,
}

impl MountTable {
    /// The mount visible at `path`, if `path` is a mount point.
    pub fn at(&self, path: &Path) -> Option<&Mount> {
        self.by_point.get(path)
    }

    /// Every mount whose device is `major:minor`.
    pub fn with_device(&self, major: u32, minor: u32) -> impl Iterator<Item = &Mount> {
        self.by_point
            .values()
            .filter(move |m| m.major == major && m.minor == minor)
    }

    /// Every mount point.
    pub fn points(&self) -> impl Iterator<Item = &Path> {
        self.by_point.keys().map(PathBuf::as_path)
    }
}

/// Longest part of a malformed line quoted in its error.
const QUOTE_MAX: usize = 160;

/// Parse a whole mountinfo file, as bytes: paths are bytes to the kernel, and one mount point
/// that is not UTF-8 must not hide the others. On a malformed line, returns its 1-based number
/// and why, quoting it.
pub fn parse(text: impl AsRef<[u8]>) -> Result<MountTable, (usize, String)> {
    let mut table = MountTable::default();
    for (i, line) in text.as_ref().split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mount = parse_line(line).map_err(|reason| (i + 1, reason))?;
        table.by_point.insert(mount.mount_point.clone(), mount);
    }
    Ok(table)
}

fn parse_line(line: &[u8]) -> Result<Mount, String> {
    let quoted = || {
        let text = String::from_utf8_lossy(line);
        match text.char_indices().nth(QUOTE_MAX) {
            Some((cut, _)) => format!("{:?}…", &text[..cut]),
            None => format!("{text:?}"),
        }
    };
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let dash = fields.iter().position(|f| *f == b"-").ok_or_else(|| {
        format!(
            "no ' - ' separator before the filesystem type in {}",
            quoted()
        )
    })?;
    if dash < 6 || fields.len() < dash + 3 {
        return Err(format!(
            "expected at least 10 fields, found {} in {}",
            fields.len(),
            quoted()
        ));
    }
    let device = String::from_utf8_lossy(fields[2]);
    let (major, minor) = device
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| format!("device {device:?} is not major:minor in {}", quoted()))?;
    let text = |field: &[u8]| String::from_utf8_lossy(&unescape(field)).into_owned();
    Ok(Mount {
        major,
        minor,
        root: text(fields[3]),
        mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
        fs_type: text(fields[dash + 1]),
        source: text(fields[dash + 2]),
    })
}

/// Decode the kernel's octal escapes (`\040` → space). Anything else is kept as it is.
fn unescape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURED: &str = include_str!("../../testdata/mountinfo");

    #[test]
    fn parses_a_captured_table_with_escaped_paths() {
        let table = parse(CAPTURED).expect("captured table parses");
        let spaced = table
            .at(Path::new("/mnt/disks/my vol"))
            .expect("the \\040 mount point is decoded");
        assert_eq!(spaced.fs_type, "tmpfs");
        let tab = table
            .at(Path::new("/mnt/disks/tab\there"))
            .expect("\\011 decoded");
        assert_eq!(tab.fs_type, "tmpfs");
        let ext4 = table.at(Path::new("/mnt/disks/vol1")).expect("vol1");
        assert_eq!((ext4.major, ext4.minor), (7, 0));
        assert_eq!(ext4.fs_type, "ext4");
        assert_eq!(ext4.source, "/dev/loop0");
        assert_eq!(ext4.root, "/");
        let bind = table.at(Path::new("/mnt/disks/bind1")).expect("bind");
        assert_eq!(bind.root, "/srv/data one");
        assert_eq!(table.with_device(7, 0).count(), 1);
    }

    #[test]
    fn topmost_of_stacked_mounts_wins() {
        let table =
            parse("1 0 0:30 / /a rw - tmpfs one rw\n2 1 0:31 / /a rw shared:3 - tmpfs two rw\n")
                .expect("parses");
        assert_eq!(
            table.at(Path::new("/a")).map(|m| m.source.as_str()),
            Some("two")
        );
    }

    #[test]
    fn malformed_lines_name_the_line() {
        for (text, line, needle) in [
            ("1 0 0:30 / /a rw - tmpfs t rw\ngarbage\n", 2, "separator"),
            ("1 0 x / /a rw - tmpfs t rw\n", 1, "major:minor"),
            ("1 0 0:1 / - tmpfs\n", 1, "fields"),
        ] {
            let (n, reason) = parse(text).expect_err("malformed");
            assert_eq!(n, line, "{reason}");
            assert!(reason.contains(needle), "{reason}");
        }
    }

    #[test]
    fn unescape_keeps_what_is_not_an_escape() {
        assert_eq!(unescape(br"a\040b\134c"), br"a b\c");
        assert_eq!(unescape(br"trailing\04"), br"trailing\04");
        assert_eq!(unescape(br"\999"), br"\999");
    }
}
