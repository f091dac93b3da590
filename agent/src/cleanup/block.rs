//! Discard and Zero for Block volumes, with util-linux's `blkdiscard`.
//!
//! ```text
//!  device (host path) ─► stat: still a block device with the volume's major:minor?
//!                     ─► blkdiscard [-z] <device>  (it opens the device O_EXCL: a mounted or
//!                                                   otherwise claimed device is refused)
//! ```

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use nix::sys::stat::{major, minor};

use super::Outcome;

/// The program that scrubs block devices (from util-linux).
pub const BLKDISCARD: &str = "blkdiscard";

/// Discard (`zero == false`) or zero every block of the device at `local` (this process's
/// path), which must still be block device `dev`.
pub fn scrub(local: &Path, dev: (u32, u32), zero: bool) -> Outcome {
    match std::fs::metadata(local) {
        Ok(meta)
            if meta.file_type().is_block_device()
                && (major(meta.rdev()) as u32, minor(meta.rdev()) as u32) == dev => {}
        Ok(_) => {
            return Outcome::Refused(format!(
                "{} is no longer block device {}:{}; nothing was touched",
                local.display(),
                dev.0,
                dev.1
            ));
        }
        Err(e) => {
            return Outcome::Refused(format!(
                "cannot stat {}: {e}; nothing was touched",
                local.display()
            ));
        }
    }
    let mut cmd = Command::new(BLKDISCARD);
    if zero {
        cmd.arg("--zeroout");
    }
    let what = if zero { "zeroing" } else { "discarding" };
    match cmd.arg(local).output() {
        Ok(out) if out.status.success() => Outcome::Succeeded(format!(
            "{} every block of {}",
            if zero { "zeroed" } else { "discarded" },
            local.display()
        )),
        Ok(out) => Outcome::Failed(format!(
            "{what} {} failed: {BLKDISCARD} {}: {}",
            local.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::Failed(format!(
            "{BLKDISCARD} is not installed in the agent's image: install util-linux (Debian: apt-get install util-linux) to scrub Block volumes"
        )),
        Err(e) => Outcome::Failed(format!("cannot run {BLKDISCARD}: {e}")),
    }
}
