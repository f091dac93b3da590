//! What every daemon loop shares: this node, its root, how often to look again, the cluster
//! (none standalone), the state read by `/metrics` and the publisher, and the scan loop's
//! trigger. One value, built once by `run`, as controller-rs passes one `Context`.
//!
//! ```text
//!  run ─► Arc<Context> ─► scan loop, NFS loop, limits loop, cleanup loop
//! ```

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::Notify;

use crate::host::RealHost;
use crate::state::AgentState;

/// What the daemon's loops share.
pub struct Context {
    /// This node's name (labels, Events, field selectors, `NodeVolumes/<node>`).
    pub node: String,
    /// The node's files, through the host root.
    pub host: Arc<RealHost>,
    /// Look again at least this often.
    pub resync: Duration,
    /// The cluster's API; `None` standalone (`--pools-file`), when nothing is published.
    pub cluster: Option<Client>,
    /// What `/metrics`, `/readyz` and the publisher read.
    pub state: Arc<AgentState>,
    /// Notified when something the scan loop publishes changed: it scans again.
    pub rescan: Arc<Notify>,
}
