//! Mount and unmount events: the kernel marks `/proc/<pid>/mountinfo` with `POLLPRI` whenever
//! that mount namespace changes, so a thread blocked in `poll(2)` wakes the scan loop at once.
//!
//! ```text
//!  mount(8) / umount(8) ──► <host-root>/proc/1/mountinfo POLLPRI ──► watcher thread ──► Notify ──► scan
//! ```

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, poll};
use tokio::sync::Notify;

use crate::error::{Error, Result};

/// Start a thread that calls `trigger.notify_one()` on every change of the mount table at
/// `path`. Fails only when the file cannot be opened.
pub fn watch_mounts(path: &Path, trigger: Arc<Notify>) -> Result<()> {
    let file = File::open(path).map_err(|source| Error::WatchMountInfo {
        path: path.to_path_buf(),
        source,
    })?;
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("volpool-mounts".into())
        .spawn(move || {
            loop {
                let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
                match poll(&mut fds, 10_000u16) {
                    Ok(0) => {}
                    Ok(_) => {
                        let flags = fds[0].revents().unwrap_or(PollFlags::empty());
                        if flags.intersects(PollFlags::POLLPRI | PollFlags::POLLERR) {
                            trigger.notify_one();
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        tracing::error!(path = %shown, error = %e, "cannot watch the mount table; relying on --resync");
                        return;
                    }
                }
            }
        })
        .map_err(|source| Error::WatchMountInfo {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(())
}
