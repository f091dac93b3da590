//! The local volumes of this node: what is in each local pool's discovery directory
//! (`discovery`), which volume each entry is (`identity`), how big and whether it answers
//! (`probe`), all of it as one [`Scan`](scan::Scan) (`scan`), published as
//! `NodeVolumes/<node>` (`publish`), again whenever the mount table changes (`watch`).
//! `cli` is the `scan` subcommand.
//!
//! ```text
//!  watch (mount events) ─► scan ─► discovery ─► identity ─┐
//!                                   probe (statvfs) ──────┴─► Scan ─► status_of ─► publish ─► NodeVolumes
//! ```

pub mod cli;
pub mod discovery;
pub mod identity;
pub mod probe;
pub mod publish;
pub mod scan;
pub mod watch;

use std::path::Path;
use std::sync::Arc;

use volpool_api::NodeVolumesStatus;

use crate::host::{Host, RealHost};
use probe::{ProbeConfig, Prober};
use scan::Scan;

/// The status the agent publishes for a scan.
pub fn status_of(host: &dyn Host, scan: &Scan) -> NodeVolumesStatus {
    NodeVolumesStatus {
        machine_id: host
            .read_to_string(Path::new("/etc/machine-id"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        volumes: scan.volumes.clone(),
        ..NodeVolumesStatus::default()
    }
}

/// A prober that runs statvfs on `host`.
pub fn prober(host: Arc<RealHost>, config: ProbeConfig) -> Prober {
    Prober::new(config, Arc::new(move |p: &Path| host.statvfs(p)))
}
