//! `statvfs` on a bounded pool of worker threads, each call with a deadline, so a dead mount
//! (a hung NFS server, a FUSE daemon that never answers) never holds up a scan.
//!
//! ```text
//!  scan ──probe_all(paths)──► queue ──► worker threads ──statvfs──► results
//!    ▲                                    │ a call past its deadline keeps its thread;
//!    └── Done / Stuck, within 2 × timeout ┘ a replacement is started, up to max_threads
//! ```
//!
//! A path whose earlier call has not returned is answered `Stuck` at once and not queued
//! again, so one dead mount costs at most one blocked thread, and `max_threads` caps them all.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::host::FsUsage;

/// How long an idle worker above the base count waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(30);

/// The outcome of probing one path.
#[derive(Debug)]
pub enum ProbeOutcome {
    /// statvfs returned (successfully or not) within the deadline.
    Done {
        /// What statvfs said.
        result: io::Result<FsUsage>,
        /// How long it took.
        took: Duration,
    },
    /// statvfs did not return in time, or an earlier call on this path still has not.
    Stuck {
        /// Why, for the entry's message.
        message: String,
        /// How long this scan waited for it.
        waited: Duration,
    },
}

/// A statvfs-like call that may block.
pub type ProbeFn = Arc<dyn Fn(&std::path::Path) -> io::Result<FsUsage> + Send + Sync>;

/// Sizing of the worker pool.
#[derive(Clone, Copy, Debug)]
pub struct ProbeConfig {
    /// Deadline of each call.
    pub timeout: Duration,
    /// Threads kept for normal work.
    pub workers: usize,
    /// Most threads at once, blocked ones included.
    pub max_threads: usize,
}

/// The worker pool. Cheap to clone; clones share the threads.
#[derive(Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProbeConfig,
    call: ProbeFn,
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    /// Paths whose call is running, and since when.
    running: HashMap<PathBuf, Instant>,
}

struct Job {
    path: PathBuf,
    index: usize,
    batch: Arc<Batch>,
}

struct Batch {
    slots: Mutex<Vec<Slot>>,
    changed: Condvar,
}

enum Slot {
    Queued,
    Running(Instant),
    Finished(io::Result<FsUsage>, Duration),
    Answered(ProbeOutcome),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // NB: a panicking probe must not take the whole agent down with a poisoned lock.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Prober {
    /// A pool that runs `call` (statvfs) with the given sizing.
    pub fn new(config: ProbeConfig, call: ProbeFn) -> Self {
        let config = ProbeConfig {
            workers: config.workers.max(1),
            max_threads: config.max_threads.max(config.workers.max(1)),
            ..config
        };
        Prober {
            inner: Arc::new(Inner {
                config,
                call,
                state: Mutex::new(State::default()),
                work: Condvar::new(),
            }),
        }
    }

    /// Number of statvfs calls running now (blocked ones included).
    #[cfg(test)]
    pub fn running(&self) -> usize {
        lock(&self.inner.state).running.len()
    }

    /// Probe every path; returns one outcome per path, in order, within about 2 × the timeout.
    pub fn probe_all(&self, paths: &[PathBuf]) -> Vec<ProbeOutcome> {
        let start = Instant::now();
        let timeout = self.inner.config.timeout;
        let batch = Arc::new(Batch {
            slots: Mutex::new(paths.iter().map(|_| Slot::Queued).collect()),
            changed: Condvar::new(),
        });
        {
            let mut state = lock(&self.inner.state);
            let mut slots = lock(&batch.slots);
            for (index, path) in paths.iter().enumerate() {
                if state.running.contains_key(path) {
                    slots[index] = Slot::Answered(ProbeOutcome::Stuck {
                        message: stuck_message(self.inner.config.timeout),
                        waited: Duration::ZERO,
                    });
                    continue;
                }
                state.queue.push_back(Job {
                    path: path.clone(),
                    index,
                    batch: batch.clone(),
                });
            }
            drop(slots);
            self.inner.spawn_needed(&mut state);
        }
        self.inner.work.notify_all();

        let tick = (timeout / 4).max(Duration::from_millis(5));
        let mut slots = lock(&batch.slots);
        loop {
            let now = Instant::now();
            let mut open = false;
            for slot in slots.iter_mut() {
                match slot {
                    Slot::Running(since) if now.duration_since(*since) >= timeout => {
                        *slot = Slot::Answered(ProbeOutcome::Stuck {
                            message: stuck_message(timeout),
                            waited: now.duration_since(start),
                        });
                    }
                    Slot::Queued if now.duration_since(start) >= 2 * timeout => {
                        *slot = Slot::Answered(ProbeOutcome::Stuck {
                            message: format!(
                                "not probed: every probe thread is blocked on a hung mount (at most {})",
                                self.inner.config.max_threads
                            ),
                            waited: now.duration_since(start),
                        });
                    }
                    Slot::Finished(..) | Slot::Answered(_) => {}
                    _ => open = true,
                }
            }
            if !open {
                break;
            }
            let (guard, _) = batch
                .changed
                .wait_timeout(slots, tick)
                .unwrap_or_else(|e| e.into_inner());
            slots = guard;
            drop(slots);
            // NB: calls past their deadline keep their threads; start replacements for them.
            {
                let mut state = lock(&self.inner.state);
                self.inner.spawn_needed(&mut state);
            }
            slots = lock(&batch.slots);
        }
        slots
            .drain(..)
            .map(|slot| match slot {
                Slot::Finished(result, took) => ProbeOutcome::Done { result, took },
                Slot::Answered(outcome) => outcome,
                Slot::Queued | Slot::Running(_) => ProbeOutcome::Stuck {
                    message: "not probed".into(),
                    waited: start.elapsed(),
                },
            })
            .collect()
    }
}

/// One message for a hung mount, the same on every scan, so the published status stays put.
fn stuck_message(timeout: Duration) -> String {
    format!(
        "statvfs did not answer within {timeout:?}: the mount is hung; it is not probed again until that call returns"
    )
}

impl Inner {
    /// Start threads while work waits and fewer than `workers` threads are healthy.
    fn spawn_needed(self: &Arc<Self>, state: &mut State) {
        let slow = state
            .running
            .values()
            .filter(|since| since.elapsed() >= self.config.timeout)
            .count();
        let target = (self.config.workers + slow).min(self.config.max_threads);
        while state.threads < target && state.idle < state.queue.len() {
            let inner = self.clone();
            let spawned = std::thread::Builder::new()
                .name("volpool-probe".into())
                .spawn(move || inner.worker());
            match spawned {
                Ok(_) => state.threads += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a probe thread");
                    break;
                }
            }
        }
    }

    fn worker(self: Arc<Self>) {
        let mut state = lock(&self.state);
        loop {
            let Some(job) = state.queue.pop_front() else {
                state.idle += 1;
                let (guard, wait) = self
                    .work
                    .wait_timeout(state, IDLE_EXIT)
                    .unwrap_or_else(|e| e.into_inner());
                state = guard;
                state.idle -= 1;
                if wait.timed_out() && state.queue.is_empty() && state.threads > self.config.workers
                {
                    state.threads -= 1;
                    return;
                }
                continue;
            };
            let started = Instant::now();
            state.running.insert(job.path.clone(), started);
            drop(state);
            set_slot(&job.batch, job.index, Slot::Running(started));
            let result = (self.call)(&job.path);
            let took = started.elapsed();
            state = lock(&self.state);
            state.running.remove(&job.path);
            drop(state);
            set_slot(&job.batch, job.index, Slot::Finished(result, took));
            state = lock(&self.state);
        }
    }
}

/// Record a job's progress, unless the scan already gave up on it.
fn set_slot(batch: &Batch, index: usize, value: Slot) {
    let mut slots = lock(&batch.slots);
    if let Some(slot) = slots.get_mut(index)
        && !matches!(slot, Slot::Answered(_))
    {
        *slot = value;
    }
    drop(slots);
    batch.changed.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::mpsc;

    fn usage(size: u64) -> FsUsage {
        FsUsage {
            size,
            ..FsUsage::default()
        }
    }

    /// A probe that hangs on paths named `hang*` until the returned sender is dropped.
    fn hanging() -> (ProbeFn, mpsc::Sender<()>) {
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Mutex::new(rx);
        let call: ProbeFn = Arc::new(move |p: &Path| {
            if p.to_string_lossy().contains("hang") {
                let _ = lock(&rx).recv();
            }
            Ok(usage(p.as_os_str().len() as u64))
        });
        (call, tx)
    }

    fn config(max_threads: usize) -> ProbeConfig {
        ProbeConfig {
            timeout: Duration::from_millis(100),
            workers: 2,
            max_threads,
        }
    }

    #[test]
    fn hung_paths_are_stuck_and_the_rest_answer() {
        let (call, release) = hanging();
        let prober = Prober::new(config(8), call);
        let paths: Vec<PathBuf> = ["/a", "/hang1", "/hang2", "/hang3", "/bb"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let out = prober.probe_all(&paths);
        let sizes: Vec<Option<u64>> = out
            .iter()
            .map(|o| match o {
                ProbeOutcome::Done { result: Ok(u), .. } => Some(u.size),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, vec![Some(2), None, None, None, Some(3)]);
        // A second scan does not queue the hung paths again: one thread each, at most.
        let again = prober.probe_all(&paths);
        assert!(
            matches!(&again[1], ProbeOutcome::Stuck { message, .. } if message.contains("hung"))
        );
        assert_eq!(prober.running(), 3);
        drop(release);
    }

    #[test]
    fn blocked_threads_are_capped() {
        let (call, release) = hanging();
        let prober = Prober::new(config(2), call);
        let paths: Vec<PathBuf> = ["/hang1", "/hang2", "/c"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let out = prober.probe_all(&paths);
        assert!(
            matches!(&out[2], ProbeOutcome::Stuck { message, .. } if message.contains("every probe thread"))
        );
        assert!(prober.running() <= 2);
        drop(release);
    }
}
