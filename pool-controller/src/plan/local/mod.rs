//! Planning of local pools, node by node: on each node, the volumes its report offers each pool
//! against the pool's PVs labelled with the node (`node.rs`: the lifecycle rules), then the
//! scrub requests the node's NodeVolumes should hold; each pool's status adds up what every
//! node's part found.
//!
//! ```text
//!  for each node in scope:  report + Node + PVs on the node ──► node::plan_node (each pool)
//!                              ├─► writes, Events                 └─► NodePart ──► LocalParts
//!                              └─► spec.cleanups of the node
//!  for each pool:  LocalParts (every node, planned now or earlier) ──► VolumePool status
//! ```
//!
//! A pass plans every node ([`Scope::All`]) or only the nodes whose input changed: a part
//! depends only on the pool's spec, the node's report, Node and PVs, and — while it has
//! something to write or a grace period running — the time, so the parts of the other nodes
//! from earlier passes are what planning them again would give. Changing any pool's spec plans
//! every node again. One cross-node rule: a volume identity two nodes report gets one PV
//! (`duplicates.rs`); a node refused one is planned on every pass until it is not.

mod desired;
mod duplicates;
mod explain;
mod held;
mod node;
pub mod pv;
mod release;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::PersistentVolume;
use volpool_api::{LABEL_POOL, NodeVolumes, VolumePool, VolumePoolSpec, optional_selector_matches};

use self::desired::PoolInput;
use self::held::Held;
use self::node::{NodePart, Output, Rules, count_only, plan_node};
use super::change::{Change, Plan};
use super::claims;
use super::select::{Refusal, name_of};
use super::status::{self, Counted, Problem};
use super::world::{Input, LocalPvs, NodeInfo, Scope};

/// What earlier passes found for each local pool on each node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalParts {
    /// The pools (spec and refusal) the parts were planned for.
    pools: Vec<(String, VolumePoolSpec, Option<Refusal>)>,
    /// By pool, then node.
    by_pool: BTreeMap<String, BTreeMap<String, NodePart>>,
    /// Nodes refused a volume identity another node offers: planned again every pass, so
    /// they get it once the other node no longer does.
    refused: BTreeSet<String>,
}

/// The nodes a pass plans, and what it looks them up in.
struct Nodes<'a> {
    info: HashMap<&'a str, &'a NodeInfo>,
    reports: BTreeMap<&'a str, &'a NodeVolumes>,
}

/// Plan the local pools on the nodes in `scope` (every node when the pools changed), using
/// `parts` for the others. Returns the plan and the nodes that had something to write or a
/// grace period running (plan them again next pass).
pub(super) fn plan(
    input: &Input,
    pvs: &dyn LocalPvs,
    scope: &Scope,
    parts: &mut LocalParts,
) -> (Plan, BTreeSet<String>) {
    let world = input.world;
    let lookup = Nodes {
        info: world.nodes.iter().map(|n| (n.name.as_str(), n)).collect(),
        reports: world
            .reports
            .iter()
            .filter_map(|r| Some((r.metadata.name.as_deref()?, r.as_ref())))
            .collect(),
    };
    let pools: Vec<&VolumePool> = input
        .pools
        .iter()
        .filter(|p| p.spec.local.is_some())
        .copied()
        .collect();
    let key: Vec<_> = pools
        .iter()
        .map(|p| {
            let name = name_of(p);
            (
                name.to_string(),
                p.spec.clone(),
                input.refused.get(name).cloned(),
            )
        })
        .collect();
    let nodes: BTreeSet<String> = match scope {
        Scope::Nodes(nodes) if parts.pools == key => nodes.clone(),
        _ => {
            *parts = LocalParts {
                pools: key,
                ..LocalParts::default()
            };
            let reported = lookup.reports.keys().map(|n| n.to_string());
            reported.chain(pvs.nodes()).collect()
        }
    };
    let mut nodes = nodes;
    nodes.extend(std::mem::take(&mut parts.refused));
    let refused = duplicates::refusals(&lookup.reports, pvs, &nodes);
    parts.refused = refused.keys().cloned().collect();
    let planned: Vec<&VolumePool> = pools
        .iter()
        .filter(|p| !input.refused.contains_key(name_of(p)))
        .copied()
        .collect();
    let mut out = Output::default();
    let mut cleanups = Vec::new();
    let mut busy = BTreeSet::new();
    for node in &nodes {
        let (writes, wakes) = (out.len(), out.wakes);
        let here = Here {
            node,
            refused: refused.get(node),
        };
        on_node(input, &lookup, &pools, here, pvs, parts, &mut out);
        let report = lookup.reports.get(node.as_str());
        let info = lookup.info.get(node.as_str()).copied();
        let change = report.and_then(|r| cleanup_change(r, info, &planned, parts, pvs));
        if out.len() > writes || out.wakes > wakes || change.is_some() {
            busy.insert(node.clone());
        }
        cleanups.extend(change);
    }
    let statuses = pools.iter().filter_map(|p| pool_status(input, p, parts));
    let mut changes = out.deletes;
    changes.extend(out.applies);
    changes.extend(cleanups);
    changes.extend(statuses);
    changes.extend(out.events.into_iter().map(Change::Event));
    let mut plan = Plan {
        changes,
        wake_after: out.wake_after,
        ..Plan::default()
    };
    let stuck = explain::stuck_claims(world, pvs, &planned);
    claims::explain(world, stuck, &mut plan);
    (plan, busy)
}

/// The node being planned, and the identities its report is refused (`duplicates.rs`).
struct Here<'a> {
    node: &'a str,
    refused: Option<&'a BTreeMap<String, String>>,
}

/// Plan every local pool on one node and keep what each found.
fn on_node(
    input: &Input,
    lookup: &Nodes,
    pools: &[&VolumePool],
    at: Here,
    pvs: &dyn LocalPvs,
    parts: &mut LocalParts,
    out: &mut Output,
) {
    let node = at.node;
    let here = pvs.on_node(node);
    let all: Vec<&PersistentVolume> = here.iter().map(AsRef::as_ref).collect();
    let held = Held::of(&all);
    let mut by_pool: HashMap<&str, Vec<&PersistentVolume>> = HashMap::new();
    for pv in &here {
        if let Some(pool) = pv.metadata.labels.as_ref().and_then(|l| l.get(LABEL_POOL)) {
            by_pool.entry(pool.as_str()).or_default().push(pv.as_ref());
        }
    }
    for pool in pools {
        let name = name_of(pool);
        let observed = by_pool.get(name).map(Vec::as_slice).unwrap_or_default();
        let part = if input.refused.contains_key(name) {
            count_only(observed)
        } else {
            let pool_input = PoolInput {
                pool,
                nodes: &lookup.info,
                reports: &lookup.reports,
                refused: at.refused,
                now: input.world.now,
            };
            plan_node(&pool_input, &Rules::of(pool), node, (observed, &held), out)
        };
        let kept = parts.by_pool.entry(name.to_string()).or_default();
        if part.is_empty() {
            kept.remove(node);
        } else {
            kept.insert(node.to_string(), part);
        }
    }
}

/// The write of the scrub requests a node should hold, when they differ from its list: those
/// planned now, plus the requests of pools not planned this pass (invalid, deleted, NFS, or
/// left to another controller by `--pool-selector`), which stay as they are: bad input never
/// cancels a scrub nor starts one. A request's pool is its PV's label or, once the PV is gone,
/// the pool the node reports the volume in; a request with neither is dropped only on a node
/// one of the planned pools covers.
fn cleanup_change(
    report: &NodeVolumes,
    info: Option<&NodeInfo>,
    planned: &[&VolumePool],
    parts: &LocalParts,
    pvs: &dyn LocalPvs,
) -> Option<Change> {
    let node = report.metadata.name.as_deref().unwrap_or_default();
    let mut wanted: Vec<_> = planned
        .iter()
        .filter_map(|p| parts.by_pool.get(name_of(p))?.get(node))
        .flat_map(|part| part.cleanups.iter().cloned())
        .collect();
    let labels = info.and_then(|n| n.labels.as_ref());
    let covered = planned
        .iter()
        .any(|p| optional_selector_matches(p.spec.node_selector.as_ref(), labels));
    let mut reported = report.status.iter().flat_map(|s| &s.volumes);
    for request in &report.spec.cleanups {
        let pool = match pvs.get(&request.persistent_volume) {
            Some(pv) => pv
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_POOL))
                .cloned(),
            None => reported
                .find(|v| v.volume_id == request.volume_id)
                .map(|v| v.pool.clone()),
        };
        let ours = match pool {
            Some(pool) => planned.iter().any(|p| name_of(p) == pool),
            None => covered,
        };
        if !ours {
            wanted.push(request.clone());
        }
    }
    wanted.sort_by(|a, b| a.persistent_volume.cmp(&b.persistent_volume));
    (wanted != report.spec.cleanups).then(|| Change::SetCleanups {
        node: node.to_string(),
        resource_version: report.metadata.resource_version.clone(),
        cleanups: wanted,
    })
}

/// The status write of one local pool, from every node's part, when it changed.
fn pool_status(input: &Input, pool: &VolumePool, parts: &LocalParts) -> Option<Change> {
    let world = input.world;
    let mut counted = Counted {
        claims: claims::counts(&world.claims, &pool.spec.storage_class_name),
        ..Counted::default()
    };
    let empty = BTreeMap::new();
    let nodes = parts.by_pool.get(name_of(pool)).unwrap_or(&empty);
    let mut problems: Vec<Problem> = Vec::new();
    let mut contributing = 0;
    for part in nodes.values() {
        counted.absorb(&part.counted);
        problems.extend(part.report_problems.iter().cloned());
        contributing += u32::from(part.contributing);
    }
    if let Some(refusal) = input.refused.get(name_of(pool)) {
        let status = status::refused(pool, &counted, refusal, world.now);
        return status::write_if_changed(pool, status);
    }
    let missing = Problem::missing_class(pool, world.storage_classes.as_ref());
    problems.splice(0..0, missing);
    problems.extend(
        nodes
            .values()
            .flat_map(|p| p.release_problems.iter().cloned()),
    );
    if counted.volumes.unhealthy > 0 {
        problems.push(Problem::new(
            "UnhealthyVolumes",
            format!(
                "{} PVs in use are missing, replaced or on a gone node (label volpool.io/health)",
                counted.volumes.unhealthy
            ),
        ));
    }
    let status = status::pool_status(pool, &counted, contributing, None, &problems, world.now);
    status::write_if_changed(pool, status)
}
