//! Loop devices over image files: the disks of fake nodes.
//!
//! ```text
//!  image (sparse, optional mkfs) ──► guard: losetup --find --show; open it; losetup -d
//!                                          (detach deferred: autoclear) ; cat < pipe from the test
//!  test ends (drop or killed) ──► pipe closes ──► guard exits ──► last user gone ──► detached
//! ```
//!
//! A loop device is the one thing a namespace does not take with it. `losetup -d` on a device
//! that is still open only marks it autoclear: the kernel detaches it when its last opener
//! (the guard, or a mount of it) goes. So a test killed before its guards run leaks no device.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

use crate::run;

/// Filesystem made on a loop device's image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fs {
    /// What most local disks carry.
    Ext4,
    /// Grows while mounted with only CAP_SYS_ADMIN (`xfs_growfs`); online `resize2fs` of ext4
    /// needs CAP_SYS_RESOURCE, which containers often lack.
    Xfs,
}

/// A sparse image file of `mib` MiB, optionally with a filesystem, attached to a loop device
/// until the guard holding it goes (on drop, or with the test process). Drop also removes the
/// image.
pub struct LoopDevice {
    /// The image file.
    pub image: PathBuf,
    /// `/dev/loopN`.
    pub device: String,
    /// Its filesystem, if one was made.
    pub fs: Option<Fs>,
    guard: Child,
}

/// Attach the image, hold the device open, defer its detach to the last close, print it, then
/// wait for the test's end (EOF on stdin).
const GUARD: &str = "set -e; dev=$(losetup --find --show \"$1\"); exec 3<\"$dev\"; \
                     losetup -d \"$dev\"; echo \"$dev\"; exec cat >/dev/null";

impl LoopDevice {
    /// Make `image` with `fs` (or none: a raw device) and attach it.
    pub fn new(image: impl Into<PathBuf>, mib: u64, fs: Option<Fs>) -> anyhow::Result<LoopDevice> {
        let image = image.into();
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .with_context(|| format!("cannot make image {}", image.display()))?;
        match fs {
            Some(Fs::Ext4) => run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?,
            Some(Fs::Xfs) => run(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&image))?,
            None => String::new(),
        };
        let mut guard = Command::new("sh")
            .args(["-c", GUARD, "sh"])
            .arg(&image)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run sh")?;
        let mut line = String::new();
        if let Some(out) = guard.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        let device = line.trim().to_string();
        if !device.starts_with("/dev/loop") {
            let _ = guard.kill();
            let _ = guard.wait();
            let mut err = String::new();
            if let Some(mut e) = guard.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            bail!("cannot attach {} to a loop device: {err}", image.display());
        }
        Ok(LoopDevice {
            image,
            device,
            fs,
            guard,
        })
    }

    /// Grow the image to `mib` MiB and tell the loop device (`losetup -c`); the filesystem on
    /// it is the caller's to grow.
    pub fn grow(&self, mib: u64) -> anyhow::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.image)
            .and_then(|f| f.set_len(mib << 20))
            .with_context(|| format!("cannot grow {}", self.image.display()))?;
        run(Command::new("losetup").args(["-c", &self.device]))?;
        Ok(())
    }

    /// The device's path.
    pub fn path(&self) -> &Path {
        Path::new(&self.device)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // NB: the device is detached once its last user is gone: at once when nothing mounts
        // it, else when the namespace that mounts it goes.
        let _ = self.guard.kill();
        let _ = self.guard.wait();
        let _ = std::fs::remove_file(&self.image);
    }
}
