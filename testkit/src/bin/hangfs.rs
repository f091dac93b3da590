//! `hangfs <mountpoint>`: a FUSE filesystem of one directory that answers `getattr` and never
//! answers `statfs` nor `readdir`: a hung mount, for tests of what the agent does with one
//! (a scan's statvfs, a scrub listing the volume). It serves until
//! killed; run it inside a `FakeNode` so the mount goes with the node.

use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, INodeNo, ReplyAttr, ReplyDirectory, ReplyStatfs, Request,
};

struct HangFs;

impl fuser::Filesystem for HangFs {
    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        let now = SystemTime::now();
        let attr = FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: FileType::Directory,
            perm: 0o755,
            nlink: 2,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        reply.attr(&Duration::from_secs(1), &attr);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // NB: dropping a reply answers EIO; forgetting it leaves the caller waiting forever.
        std::mem::forget(reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _off: u64,
        reply: ReplyDirectory,
    ) {
        std::mem::forget(reply);
    }
}

fn main() -> std::io::Result<()> {
    let Some(mountpoint) = std::env::args_os().nth(1) else {
        eprintln!("usage: hangfs <mountpoint>");
        std::process::exit(2);
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("hangfs".into()),
        fuser::MountOption::Subtype("hangfs".into()),
    ];
    fuser::mount(HangFs, mountpoint, &config)
}
