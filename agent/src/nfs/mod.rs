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
pub mod pool;
pub mod rpc;
pub mod rpmdb;
pub mod sqlite;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use volpool_api::{Check, CheckStatus, NfsClientStatus};

use crate::host::Host;
pub use pool::{NfsPool, select};

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

/// Whether the client software (not the kernel) is missing: what an install can fix.
pub fn missing(status: &NfsClientStatus) -> bool {
    status.checks.iter().any(|c| {
        (c.name == checks::MOUNT_HELPER || c.name == checks::PACKAGE)
            && c.status == CheckStatus::NonOK
    })
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
