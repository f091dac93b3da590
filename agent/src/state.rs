//! What the daemon's loops share with the HTTP handlers and the publisher: the latest scan's
//! metrics text, readiness, the latest NFS client status, limits and network checks, the
//! scrubs under way. A leaf: the loops write here, `/metrics`, `/readyz` and the scan loop
//! read; nothing here imports them.
//!
//! ```text
//!  scan loop ──set_scan_text──►┐
//!  NFS loop ──nfs.set──────────┤
//!  limits loop ──limits.set────┼─► AgentState ─► GET /metrics, GET /readyz, status.{nfsClient,limits}
//!  network loop ──network.set──┤
//!  cleanup loop ──scrubs───────┤
//!  publisher ──set_published──►┘
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use prometheus::Registry;
use volpool_api::{NetworkStatus, NfsClientStatus, NodeLimits};

/// The latest value of something a loop keeps up to date, and whether a new one changed it.
pub struct Latest<T> {
    value: RwLock<Option<T>>,
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        Latest {
            value: RwLock::new(None),
        }
    }
}

impl<T: Clone + PartialEq> Latest<T> {
    /// The latest value (`None` before the first).
    pub fn get(&self) -> Option<T> {
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Store `value`; returns whether it differs from the one before.
    pub fn set(&self, value: T) -> bool {
        let mut slot = self.value.write().unwrap_or_else(|e| e.into_inner());
        let changed = slot.as_ref() != Some(&value);
        *slot = Some(value);
        changed
    }
}

/// The latest NFS client status, shared with `/metrics` and the publisher.
pub type NfsState = Latest<NfsClientStatus>;

/// The latest limits, shared with `/metrics` and the publisher.
#[derive(Default)]
pub struct LimitsState {
    text: RwLock<Arc<String>>,
    status: Latest<NodeLimits>,
}

impl LimitsState {
    /// The limits families as Prometheus text (empty before the first read).
    pub fn text(&self) -> Arc<String> {
        self.text.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What goes into `NodeVolumes.status.limits` (`None` before the first read).
    pub fn status(&self) -> Option<NodeLimits> {
        self.status.get()
    }

    /// Store a read's metrics text and status; returns whether the status changed.
    pub fn set(&self, text: String, status: NodeLimits) -> bool {
        *self.text.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(text);
        self.status.set(status)
    }
}

/// One round of the network loop: what is published, whether the apiserver path in use
/// answered (`None` standalone), and why the path is what it is (for `/readyz`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkOutcome {
    /// What goes into `NodeVolumes.status.network`.
    pub status: NetworkStatus,
    /// Whether the path in use answered (`None` standalone: no apiserver).
    pub reachable: Option<bool>,
    /// Why the path is what it is (empty on the Service path when it answers).
    pub note: String,
}

/// A scrub under way: its PV, its volume and when it started.
#[derive(Clone, Debug, PartialEq)]
pub struct RunningScrub {
    /// The released PV's name.
    pub persistent_volume: String,
    /// The volume being scrubbed.
    pub volume_id: String,
    /// When the scrub started.
    pub since: SystemTime,
}

/// The scrubs under way, by PV UID, until their thread returns (which a hung mount may
/// never let happen).
#[derive(Default)]
pub struct RunningScrubs(Mutex<BTreeMap<String, RunningScrub>>);

impl RunningScrubs {
    /// Record a scrub starting.
    pub fn start(&self, pv_uid: &str, scrub: RunningScrub) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pv_uid.to_string(), scrub);
    }

    /// Record a scrub ending.
    pub fn finish(&self, pv_uid: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pv_uid);
    }

    /// Every scrub under way.
    pub fn list(&self) -> Vec<RunningScrub> {
        let scrubs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        scrubs.values().cloned().collect()
    }
}

/// What the scan loop and the publisher share with the HTTP handlers.
#[derive(Default)]
pub struct AgentState {
    scan_text: RwLock<Arc<String>>,
    scanned: AtomicBool,
    published: AtomicBool,
    must_publish: bool,
    /// The registry `/metrics` renders the node-wide families from (set once serving).
    pub registry: OnceLock<Registry>,
    /// The latest NFS client status.
    pub nfs: NfsState,
    /// The latest limits (metrics text and `status.limits`).
    pub limits: LimitsState,
    /// The latest network checks and apiserver path.
    pub network: Latest<NetworkOutcome>,
    /// The scrubs under way.
    pub scrubs: RunningScrubs,
}

impl AgentState {
    /// New state; `must_publish` when readiness waits for a first publish.
    pub fn new(must_publish: bool) -> Arc<Self> {
        Arc::new(AgentState {
            must_publish,
            ..AgentState::default()
        })
    }

    /// Store a finished scan's metrics text.
    pub fn set_scan_text(&self, text: String) {
        *self.scan_text.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(text);
        self.scanned.store(true, Ordering::Release);
    }

    /// The latest scan's metrics text.
    pub fn scan_text(&self) -> Arc<String> {
        self.scan_text
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a scan has finished.
    pub fn scanned(&self) -> bool {
        self.scanned.load(Ordering::Acquire)
    }

    /// Record a successful publish (or a check that found nothing to change).
    pub fn set_published(&self) {
        self.published.store(true, Ordering::Release);
    }

    /// `None` when ready, else why not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.scanned() {
            Some("the first scan has not finished")
        } else if self.must_publish && !self.published.load(Ordering::Acquire) {
            Some("NodeVolumes has not been published yet")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_says_whether_a_value_changed() {
        let cell = Latest::<u32>::default();
        assert_eq!(cell.get(), None);
        assert!(cell.set(1));
        assert!(!cell.set(1));
        assert!(cell.set(2));
        assert_eq!(cell.get(), Some(2));
    }

    #[test]
    fn readiness_waits_for_a_scan_and_in_a_cluster_a_publish() {
        let standalone = AgentState::new(false);
        assert!(standalone.not_ready().is_some());
        standalone.set_scan_text(String::new());
        assert_eq!(standalone.not_ready(), None);
        let cluster = AgentState::new(true);
        cluster.set_scan_text(String::new());
        assert!(
            cluster
                .not_ready()
                .is_some_and(|why| why.contains("published"))
        );
        cluster.set_published();
        assert_eq!(cluster.not_ready(), None);
    }
}
