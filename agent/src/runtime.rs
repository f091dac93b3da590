//! How the daemon's process is set up, so that it stays small on every node: glibc's malloc
//! with one arena and a fixed trim threshold, and a tokio runtime of at most two workers.
//!
//! ```text
//!  volpool-agent (daemon) ─► GLIBC_TUNABLES without arena_max? ─► exec itself once with ours
//!                                          └─ with it ─► tokio runtime (≤ 2 workers) ─► run
//! ```
//!
//! Measured with `bench/agent-scan` (1,000 mounts, see BENCHMARKS.md): with glibc's defaults
//! each thread that allocates gets an arena of its own (up to 8 per core), and freeing one
//! `/metrics` text (0.6 MiB, served from `mmap`) raises the trim threshold to twice its size, so
//! each arena keeps up to 1.2 MiB it no longer uses: 7.6 MiB anonymous memory, against 2.9 MiB
//! with [`TUNABLES`]. glibc reads its tunables only when a process starts, and setting them with
//! `mallopt` would need `unsafe`, which the workspace forbids: hence the one `exec`. The
//! commands the daemon runs inherit the variable; glibc ignores tunables it does not know.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// One malloc arena for all threads (the agent allocates little, so they hardly contend), and
/// free memory above 128 KiB at the top of the heap returned to the kernel. Setting the trim
/// threshold also stops glibc from raising it (and the `mmap` threshold) after big frees.
pub const TUNABLES: &str = "glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=131072";

/// The environment variable glibc reads its tunables from.
const TUNABLES_VAR: &str = "GLIBC_TUNABLES";

/// Most tokio workers: the daemon's work is a few watches, timers and HTTP requests; its
/// blocking work (scans, probes, checks) has threads of its own. CI runs on 2 cores, so this is
/// also the worker count the tests run with.
const MAX_WORKERS: usize = 2;

/// The `GLIBC_TUNABLES` value to run the daemon with, given the current one; `None` when the
/// current one already sets the arena count (ours after the `exec`, or the operator's choice).
pub fn tunables(current: Option<&OsStr>) -> Option<OsString> {
    let current = current.unwrap_or_default();
    if current.to_string_lossy().contains("glibc.malloc.arena_max") {
        return None;
    }
    let mut value = current.to_os_string();
    if !value.is_empty() {
        value.push(":");
    }
    value.push(TUNABLES);
    Some(value)
}

/// Execute this binary again, with the same arguments and [`TUNABLES`] added to
/// `GLIBC_TUNABLES`, unless the arena count is set already. Returns only when no `exec` is
/// needed or it failed (the daemon then runs with glibc's defaults, which is merely bigger).
/// Call it before any thread starts: `exec` would end them.
pub fn exec_with_malloc_tunables() {
    if !cfg!(target_env = "gnu") {
        return;
    }
    let Some(value) = tunables(std::env::var_os(TUNABLES_VAR).as_deref()) else {
        return;
    };
    // NB: the binary's own path, not /proc/self/exe: the kernel names the process after the
    // file executed, and `ps volpool-agent` should still find it.
    let error = match std::env::current_exe() {
        Ok(exe) => {
            let mut args = std::env::args_os();
            let arg0 = args.next().unwrap_or_else(|| exe.clone().into());
            Command::new(exe)
                .arg0(arg0)
                .args(args)
                .env(TUNABLES_VAR, value)
                .exec()
        }
        Err(e) => e,
    };
    tracing::warn!(error = %error, "cannot start again with a small malloc ({TUNABLES}); running with glibc's defaults");
}

/// The daemon's tokio runtime: one worker per core, at most [`MAX_WORKERS`].
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.min(MAX_WORKERS))
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_are_added_to_what_is_set() {
        assert_eq!(tunables(None), Some(TUNABLES.into()));
        assert_eq!(tunables(Some(OsStr::new(""))), Some(TUNABLES.into()));
        assert_eq!(
            tunables(Some(OsStr::new("glibc.malloc.tcache_count=0"))),
            Some(format!("glibc.malloc.tcache_count=0:{TUNABLES}").into())
        );
    }

    #[test]
    fn an_arena_count_already_set_is_kept_and_nothing_is_executed_again() {
        assert_eq!(tunables(Some(OsStr::new(TUNABLES))), None);
        assert_eq!(tunables(Some(OsStr::new("glibc.malloc.arena_max=4"))), None);
    }
}
