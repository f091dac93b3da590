//! How long a failed watch of the apiserver waits before it tries again, in both programs:
//! 0.5 s, doubling, at most 5 s; after any event, 0.5 s again.
//!
//! kube's default policy grows to 30 s and keeps growing for two minutes, so after an apiserver
//! (or etcd) outage of half a minute a watch could stay down 30 s more while the rest of the
//! program worked again: the controller led and planned from stores that no longer changed,
//! and wrote with stale resourceVersions, refused on every pass (found by the chaos soak,
//! `tests/chaos/run`). A store that is 5 s behind at worst costs one more request per watch
//! every 5 s during an outage.

use std::time::Duration;

/// The first delay, and the delay again after a success.
pub const WATCH_RETRY_MIN: Duration = Duration::from_millis(500);
/// The longest delay, however long the apiserver stays away.
pub const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// The delays of one watch's retries (an iterator that never ends).
#[derive(Clone, Debug)]
pub struct WatchRetry {
    next: Duration,
}

impl Default for WatchRetry {
    fn default() -> Self {
        WatchRetry {
            next: WATCH_RETRY_MIN,
        }
    }
}

impl WatchRetry {
    /// Start again from [`WATCH_RETRY_MIN`] (the watch got an event).
    pub fn reset(&mut self) {
        self.next = WATCH_RETRY_MIN;
    }
}

impl Iterator for WatchRetry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(WATCH_RETRY_MAX);
        Some(delay)
    }
}

/// Declare `Retry`: a kube `Backoff` (for `WatchStreamExt::backoff`) that follows
/// [`WatchRetry`]. Each program that watches declares it with this macro (they depend on kube's
/// runtime; this crate does not, so it cannot implement the trait itself).
#[macro_export]
macro_rules! watch_backoff {
    () => {
        /// The retries of a failed watch: `volpool_api::retry::WatchRetry`,
        /// at most 5 s apart, not kube's default (up to 30 s, for two minutes after an outage).
        #[derive(Clone, Debug, Default)]
        pub struct Retry($crate::retry::WatchRetry);

        impl Iterator for Retry {
            type Item = std::time::Duration;

            fn next(&mut self) -> Option<Self::Item> {
                self.0.next()
            }
        }

        impl kube::runtime::utils::Backoff for Retry {
            fn reset(&mut self) {
                self.0.reset();
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_of_any_length_leaves_a_watch_at_most_5_s_behind_and_success_starts_over() {
        let mut retry = WatchRetry::default();
        let delays: Vec<Duration> = retry.by_ref().take(100).collect();
        assert_eq!(
            delays[..4],
            [500, 1000, 2000, 4000].map(Duration::from_millis)
        );
        assert!(delays.iter().all(|d| *d <= WATCH_RETRY_MAX), "{delays:?}");
        assert_eq!(delays[99], WATCH_RETRY_MAX);
        retry.reset();
        assert_eq!(retry.next(), Some(WATCH_RETRY_MIN));
    }
}
