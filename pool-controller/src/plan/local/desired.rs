//! The PVs a node's report offers a local pool: one per Ready volume with an identity, on a
//! known Node of the UID the report was written for, matching the pool's `nodeSelector`.
//!
//! ```text
//!  NodeVolumes.status.volumes (this pool) + Node ──► Desired {pvs, identity at each path, node}
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::jiff::Timestamp;

use volpool_api::{
    NodeVolumes, NodeVolumesStatus, VolumePool, VolumeReport, VolumeState, local_pv_name,
};

use super::pv::LocalPv;
use crate::plan::pv::PoolFields;
use volpool_api::optional_selector_matches;

use crate::plan::select::name_of;
use crate::plan::status::Problem;
use crate::plan::world::NodeInfo;

/// A PV's capacity is a whole number of these.
const MIB: u64 = 1 << 20;

/// What one pool's planning looks at.
pub struct PoolInput<'a> {
    pub pool: &'a VolumePool,
    pub nodes: &'a HashMap<&'a str, &'a NodeInfo>,
    pub reports: &'a BTreeMap<&'a str, &'a NodeVolumes>,
    /// Identities this node's report is refused, and why (another node offers them).
    pub refused: Option<&'a BTreeMap<String, String>>,
    pub now: Timestamp,
}

/// The PVs the reports offer a pool.
pub struct Desired<'a> {
    /// By PV name.
    pub pvs: BTreeMap<String, LocalPv>,
    /// The identity now at each (node, path), ready or not.
    pub at_path: HashMap<(&'a str, &'a str), &'a str>,
    /// Nodes with at least one ready volume of the pool.
    pub contributing: BTreeSet<&'a str>,
}

/// Desired PVs on one node, from its report when the node is known and its labels match the
/// pool.
pub fn desired<'a>(
    input: &PoolInput<'a>,
    node_name: &'a str,
    problems: &mut Vec<Problem>,
) -> Desired<'a> {
    let pool_name = name_of(input.pool);
    let mut desired = Desired {
        pvs: BTreeMap::new(),
        at_path: HashMap::new(),
        contributing: BTreeSet::new(),
    };
    let Some(status) = input.reports.get(node_name).and_then(|r| r.status.as_ref()) else {
        return desired;
    };
    let mut volumes = status
        .volumes
        .iter()
        .filter(|v| v.pool == pool_name)
        .peekable();
    if volumes.peek().is_none() {
        return desired;
    }
    let Some(node) = reporting_node(input, node_name, status, problems) else {
        return desired;
    };
    for volume in volumes {
        if !volume.volume_id.is_empty() {
            desired
                .at_path
                .insert((node_name, volume.path.as_str()), volume.volume_id.as_str());
        }
        if volume.state != VolumeState::Ready || volume.volume_id.is_empty() {
            continue;
        }
        if let Some(why) = input.refused.and_then(|r| r.get(&volume.volume_id)) {
            problems.push(Problem::new("DuplicateVolume", why.clone()));
            continue;
        }
        desired.contributing.insert(node_name);
        let pv = desired_pv(input.pool, node, volume);
        desired.pvs.insert(pv.name.clone(), pv);
    }
    desired
}

/// The Node behind a report that offers this pool volumes, when its volumes count: a known
/// Node, of the UID the report was written for, matching the pool's `nodeSelector`.
fn reporting_node<'a>(
    input: &PoolInput<'a>,
    node_name: &str,
    status: &NodeVolumesStatus,
    problems: &mut Vec<Problem>,
) -> Option<&'a NodeInfo> {
    let Some(node) = input.nodes.get(node_name).copied() else {
        problems.push(Problem::new(
            "UnknownNode",
            format!("NodeVolumes {node_name:?} reports volumes but there is no Node {node_name:?}; they are ignored"),
        ));
        return None;
    };
    if !status.node_uid.is_empty() && status.node_uid != node.uid {
        problems.push(Problem::new(
            "StaleReport",
            format!("NodeVolumes {node_name:?} was written for an earlier Node of that name (nodeUID {}); its volumes are ignored until the agent reports again", status.node_uid),
        ));
        return None;
    }
    optional_selector_matches(input.pool.spec.node_selector.as_ref(), node.labels.as_ref())
        .then_some(node)
}

fn desired_pv(pool: &VolumePool, node: &NodeInfo, volume: &VolumeReport) -> LocalPv {
    let pool_name = name_of(pool);
    let entry = volume.path.rsplit('/').next().unwrap_or_default();
    LocalPv {
        name: local_pv_name(pool_name, &node.name, entry, &volume.volume_id),
        pool: pool_name.to_string(),
        node: node.name.clone(),
        node_uid: node.uid.clone(),
        volume_id: volume.volume_id.clone(),
        path: volume.path.clone(),
        // NB: whole MiB, as local-static-provisioner does, so `kubectl get pv` reads like a
        // person wrote it (1945Mi); the report keeps the exact bytes.
        capacity_bytes: volume.capacity_bytes / MIB * MIB,
        volume_mode: volume.volume_mode,
        fields: PoolFields::of(pool),
        health: None,
        released_at: None,
        cleanup_failed: false,
    }
}
