//! The pure heart of the controller: from what the cluster holds to the writes that make the
//! PV inventory true. No I/O, no clock (the time is an input), so every lifecycle rule is
//! tested on plain data, and the offline `plan` subcommand runs the very same code.
//!
//! ```text
//!  VolumePools ─┐                  ┌─► local::plan ─┐
//!  NodeVolumes ─┤                  │                ├─► [CreatePv, UpdatePv, DeletePv, ApplyNfsPv,
//!  Nodes ───────┼─► plan(&World) ──┤                │    SetCleanups, PoolStatus, Event]
//!  PVs ─────────┤                  └─► nfs::plan ───┤  + [ExportOp] (directory first, then its writes)
//!  ExportViews ─┘                                   └─► + when to look again (grace periods)
//! ```
//!
//! A pass may plan the local pools on a few nodes only ([`plan_pass`], [`Scope`]): each node's
//! part of a pool depends on that node's input alone, and the pool's status adds up the parts.
//!
//! Modules: `local/` and `nfs/` hold each kind's rules and its PV type; `pv` what every PV
//! shares; `status` the pool status of both kinds; `select` validation and selectors;
//! `events` the Events.
//!
//! Safety rules kept here: a PV with a claimRef is never deleted except after its volume was
//! scrubbed (or its pool asks for no scrub); a scrub is only asked for when the node still
//! reports the very identity the PV was made for; a pool that fails validation gets a
//! condition and no other change.

mod change;
pub mod claims;
pub mod events;
mod local;
pub mod nfs;
pub(crate) mod pv;
mod select;
pub mod status;
#[cfg(test)]
mod tests;
mod world;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolume;
use volpool_api::{ANNOTATION_PRE_BOUND, LABEL_POOL, VolumePool};

pub use change::{Change, Plan};
pub use events::Notice;
pub use local::LocalParts;
#[cfg(test)]
use local::pv::ANNOTATION_NODE_UID;
pub use local::pv::affinity_node;
#[cfg(test)]
use pv::ANNOTATION_RELEASED_AT;
pub use world::{ClassInfo, Input, LocalPvs, NodeInfo, Scope, World, WorldPvs};

/// The PV annotations the plan reads (a store may drop the others).
pub const READ_ANNOTATIONS: [&str; 5] = [
    local::pv::ANNOTATION_NODE_UID,
    local::pv::ANNOTATION_CLEANUP_FAILED,
    pv::ANNOTATION_VOLUME_ID,
    pv::ANNOTATION_RELEASED_AT,
    ANNOTATION_PRE_BOUND,
];

/// Decide what must change so the PVs match the pools, the nodes' reports and the exports.
/// Pools of both kinds go through here; each pool is planned by its kind's rules.
pub fn plan(world: &World) -> Plan {
    let pvs = WorldPvs::new(&world.pvs);
    plan_pass(world, &pvs, &Scope::All, &mut LocalParts::default()).0
}

/// [`plan`], for a pass that plans the local pools only on the nodes in `scope` and takes the
/// other nodes' parts from `parts` (what earlier passes found), reading the local pools' PVs
/// from `local_pvs` (`world.pvs` then needs to hold only the NFS pools' PVs). Returns the plan
/// and the nodes to plan again next pass (they had something to write or a grace period).
pub fn plan_pass(
    world: &World,
    local_pvs: &dyn LocalPvs,
    scope: &Scope,
    parts: &mut LocalParts,
) -> (Plan, BTreeSet<String>) {
    let mut by_pool: HashMap<&str, Vec<&PersistentVolume>> = HashMap::new();
    for pv in &world.pvs {
        if let Some(pool) = pv.metadata.labels.as_ref().and_then(|l| l.get(LABEL_POOL)) {
            by_pool.entry(pool.as_str()).or_default().push(pv);
        }
    }
    let mut pools: Vec<&VolumePool> = world.pools.iter().map(Arc::as_ref).collect();
    pools.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let input = Input {
        world,
        refused: select::refusals(&pools),
        pools,
        by_pool,
    };
    let (mut plan, busy) = local::plan(&input, local_pvs, scope, parts);
    let nfs = nfs::plan(&input);
    plan.changes.extend(nfs.changes);
    plan.ops = nfs.ops;
    plan.explained.extend(nfs.explained);
    if let Some(after) = nfs.wake_after {
        plan.wake(after);
    }
    claims::explain(world, claims::unserved(world), &mut plan);
    (plan, busy)
}
