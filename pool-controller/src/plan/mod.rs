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
mod pv;
mod select;
pub mod status;
#[cfg(test)]
mod tests;
mod world;

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolume;
use volpool_api::{LABEL_POOL, VolumePool};

pub use change::{Change, Plan};
pub use events::Notice;
#[cfg(test)]
use local::pv::ANNOTATION_NODE_UID;
#[cfg(test)]
use pv::ANNOTATION_RELEASED_AT;
pub use world::{ClassInfo, Input, NodeInfo, World};

/// Decide what must change so the PVs match the pools, the nodes' reports and the exports.
/// Pools of both kinds go through here; each pool is planned by its kind's rules.
pub fn plan(world: &World) -> Plan {
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
    let mut plan = local::plan(&input);
    let nfs = nfs::plan(&input);
    plan.changes.extend(nfs.changes);
    plan.ops = nfs.ops;
    plan.explained.extend(nfs.explained);
    if let Some(after) = nfs.wake_after {
        plan.wake(after);
    }
    claims::explain(world, claims::unserved(world), &mut plan);
    plan
}
