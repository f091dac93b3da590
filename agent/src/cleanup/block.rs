//! Discard and Zero for Block volumes, with util-linux's `blkdiscard`.
//!
//! ```text
//!  device (host path) ─► stat: still a block device with the volume's major:minor?
//!                     ─► blkdiscard [-z] <device>  (it opens the device O_EXCL: a mounted or
//!                                                   otherwise claimed device is refused)
//! ```

use std::path::Path;

use super::Outcome;
use crate::host::{BLKDISCARD, FileKind, Host, ScrubHost};

/// Discard (`zero == false`) or zero every block of the device at host path `device`, which
/// must still be block device `dev`.
pub fn scrub<S: ScrubHost>(
    host: &dyn Host,
    writes: &S,
    device: &Path,
    dev: (u32, u32),
    zero: bool,
) -> Outcome {
    let local = writes.local_path(device);
    match host.stat(device) {
        Ok(info) if info.kind == FileKind::Block && info.rdev == dev => {}
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
    let what = if zero { "zeroing" } else { "discarding" };
    match writes.blkdiscard(device, zero) {
        Ok(out) if out.success => Outcome::Succeeded(format!(
            "{} every block of {}",
            if zero { "zeroed" } else { "discarded" },
            local.display()
        )),
        Ok(out) => Outcome::Failed(format!(
            "{what} {} failed: {BLKDISCARD} {}: {}",
            local.display(),
            out.status,
            out.stderr.trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::Failed(format!(
            "{BLKDISCARD} is not installed in the agent's image: install util-linux (Debian: apt-get install util-linux) to scrub Block volumes"
        )),
        Err(e) => Outcome::Failed(format!("cannot run {BLKDISCARD}: {e}")),
    }
}
