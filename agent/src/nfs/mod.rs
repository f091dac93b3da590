//! NFS client prerequisites of this node: checks (files of the host root, rpcbind on the
//! host's loopback), probes of the NFS pools' servers over the wire, and the opt-in installer.
//! The checks and the plan are pure over [`Host`] and plain data; `rpc` and `install` are the
//! small I/O shell (sockets with deadlines, `chroot` with a deadline).
//!
//! ```text
//!  VolumePools ─► select (nodeSelector, mountOptions) ─► [NfsPool]
//!  Host ─► checks::{mount_helper, package, nfs_version, idmap_domain}, kernel::kernel ─┐
//!  127.0.0.1:111 ─► rpc::statd (only for NFSv3 pools with locking) ────────────────────┼─► NfsClientStatus
//!  [NfsPool] ─► rpc::probe_server (resolve, :2049, portmap, mountd EXPORT) ────────────┘   (ready, checks, servers)
//! ```

pub mod checks;
pub mod cli;
pub mod daemon;
pub mod error;
pub mod install;
pub mod kernel;
pub mod osrelease;
pub mod rpc;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use volpool_api::{Check, CheckStatus, NfsClientStatus, VolumePool};

use crate::host::Host;
use volpool_api::selector_matches;

/// An NFS pool as this node's checks need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfsPool {
    /// The pool's name.
    pub name: String,
    /// The server.
    pub server: String,
    /// The exported path.
    pub path: String,
    /// Probe the NFSv3 side (portmapper, mountd, export list): the pool mounts with v3, or
    /// leaves the version to negotiation (the controller reaches it over NFSv3 anyway).
    pub v3: bool,
    /// NFSv3 with locking (no `nolock`): rpcbind and rpc.statd are needed on the node.
    pub locking: bool,
}

impl NfsPool {
    /// The NFS part of a pool; `None` for local pools.
    pub fn from_pool(pool: &VolumePool) -> Option<NfsPool> {
        let nfs = pool.spec.nfs.as_ref()?;
        let options: Vec<&str> = pool
            .spec
            .mount_options
            .iter()
            .flat_map(|o| o.split(','))
            .map(str::trim)
            .collect();
        let version = options.iter().rev().find_map(|o| match o.split_once('=') {
            Some(("vers" | "nfsvers", v)) => Some(v.to_string()),
            _ => o
                .strip_prefix('v')
                .filter(|v| v.parse::<f32>().is_ok())
                .map(String::from),
        });
        let nolock = options
            .iter()
            .any(|o| *o == "nolock" || *o == "local_lock=all");
        let v3 = version.as_deref().is_none_or(|v| v == "3");
        Some(NfsPool {
            name: pool.metadata.name.clone().unwrap_or_default(),
            server: nfs.server.clone(),
            path: nfs.path.clone(),
            v3,
            locking: version.as_deref() == Some("3") && !nolock,
        })
    }
}

/// The NFS pools among `pools` whose node selector matches `labels` (`None`: every pool).
pub fn select(pools: &[VolumePool], labels: Option<&BTreeMap<String, String>>) -> Vec<NfsPool> {
    let mut out: Vec<NfsPool> = pools
        .iter()
        .filter(|p| match (labels, &p.spec.node_selector) {
            (Some(labels), Some(selector)) => selector_matches(selector, labels),
            _ => true,
        })
        .filter_map(NfsPool::from_pool)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Deadlines and addresses of the network checks.
#[derive(Clone, Copy, Debug)]
pub struct NfsConfig {
    /// Deadline of each network step (resolve, connect, each RPC).
    pub deadline: Duration,
    /// The host's portmapper (the agent runs with hostNetwork).
    pub portmap: SocketAddr,
}

impl Default for NfsConfig {
    fn default() -> Self {
        NfsConfig {
            deadline: Duration::from_secs(5),
            portmap: SocketAddr::from(([127, 0, 0, 1], 111)),
        }
    }
}

/// The checks that read the host root only.
pub fn file_checks(host: &dyn Host) -> Vec<Check> {
    vec![
        checks::mount_helper(host),
        checks::package(host),
        kernel::kernel(host),
        checks::nfs_version(host),
        checks::idmap_domain(host),
    ]
}

/// Whether the node can mount the pools: every check they need is OK. The package and the
/// idmap domain are advice; server reachability is the server's business, not the node's.
pub fn ready(checks: &[Check]) -> bool {
    checks
        .iter()
        .filter(|c| c.name != checks::PACKAGE && c.name != checks::IDMAP_DOMAIN)
        .all(|c| c.status == CheckStatus::OK)
}

/// Every check and every server probe for `pools` on `host`.
pub async fn evaluate(host: &dyn Host, pools: &[NfsPool], config: NfsConfig) -> NfsClientStatus {
    let mut checks = file_checks(host);
    if pools.iter().any(|p| p.locking) {
        checks.push(rpc::statd(config.portmap, config.deadline).await);
    }
    let servers =
        futures::future::join_all(pools.iter().map(|p| rpc::probe_server(p, config.deadline)))
            .await;
    NfsClientStatus {
        ready: ready(&checks),
        checks,
        servers,
    }
}
