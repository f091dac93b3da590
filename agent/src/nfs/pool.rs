//! Which NFS pools this node checks, and what their mount options mean for the client: a
//! pool is checked when its node selector matches the node; its `mountOptions` say whether
//! the NFSv3 side (portmapper, mountd) and locking (rpc.statd) are needed.
//!
//! ```text
//!  VolumePools + Node labels ─► select (nodeSelector) ─► from_pool (mountOptions) ─► [NfsPool]
//! ```

use std::collections::BTreeMap;

use volpool_api::{VolumePool, optional_selector_matches};

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
        .filter(|p| optional_selector_matches(p.spec.node_selector.as_ref(), labels))
        .filter_map(NfsPool::from_pool)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
