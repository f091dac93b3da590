//! One disk is on one node: a volume identity that two nodes' reports both offer is not made a
//! second PV. The node that already has a PV for it keeps it; the other report is refused for
//! that identity (a `DuplicateVolume` problem on the pool, so its `Degraded` condition names
//! both nodes). When no node has a PV for it yet, every claimant is refused: the controller
//! cannot tell which report is true (see "What the controller trusts" in the architecture).
//!
//! ```text
//!  Ready identities of the nodes planned ─► every report offering one of them ─► two nodes or more?
//!     ─► a PV of it on one of them: that node keeps it, the others are refused
//!     └► no PV yet: all are refused
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use volpool_api::{NodeVolumes, VolumeState};

use crate::plan::pv::ANNOTATION_VOLUME_ID;
use crate::plan::world::LocalPvs;

/// Identities refused on each node: node → identity → why.
pub type Refusals = BTreeMap<String, BTreeMap<String, String>>;

/// The Ready identities of a report.
fn ready(report: &NodeVolumes) -> impl Iterator<Item = &str> {
    report
        .status
        .iter()
        .flat_map(|s| &s.volumes)
        .filter(|v| v.state == VolumeState::Ready && !v.volume_id.is_empty())
        .map(|v| v.volume_id.as_str())
}

/// The identities refused on the nodes of `scope`, from every report.
pub fn refusals(
    reports: &BTreeMap<&str, &NodeVolumes>,
    pvs: &dyn LocalPvs,
    scope: &BTreeSet<String>,
) -> Refusals {
    let planned: HashSet<&str> = scope
        .iter()
        .filter_map(|n| reports.get(n.as_str()))
        .flat_map(|report| ready(report))
        .collect();
    if planned.is_empty() {
        // NB: a pass over no node with Ready volumes reads no other report.
        return Refusals::new();
    }
    let mut claimants: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (node, report) in reports {
        for id in ready(report).filter(|id| planned.contains(id)) {
            claimants.entry(id).or_default().insert(node);
        }
    }
    let mut out = Refusals::new();
    for (id, nodes) in claimants.into_iter().filter(|(_, n)| n.len() > 1) {
        let owners: Vec<(&str, String)> = nodes
            .iter()
            .filter_map(|node| Some((*node, pv_of(pvs, node, id)?)))
            .collect();
        for node in nodes.iter().filter(|n| scope.contains(**n)) {
            if owners.iter().any(|(owner, _)| owner == node) {
                continue;
            }
            let why = match owners.first() {
                Some((owner, pv)) => format!(
                    "NodeVolumes {node:?} reports volume {id}, which node {owner} already offers as PV {pv}: one disk cannot be on two nodes, so no second PV is made; if the disk really moved, delete PV {pv} once it is not in use"
                ),
                None => format!(
                    "nodes {} all report volume {id}: one disk cannot be on two nodes and the controller cannot tell which report is true, so none gets a PV until only one reports it",
                    nodes.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            };
            out.entry(node.to_string())
                .or_default()
                .insert(id.to_string(), why);
        }
    }
    out
}

/// The name of a PV on `node` made for identity `id`.
fn pv_of(pvs: &dyn LocalPvs, node: &str, id: &str) -> Option<String> {
    pvs.on_node(node).into_iter().find_map(|pv| {
        let annotations = pv.metadata.annotations.as_ref()?;
        (annotations.get(ANNOTATION_VOLUME_ID).map(String::as_str) == Some(id))
            .then(|| pv.metadata.name.clone())
            .flatten()
    })
}
