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

pub mod events;
mod local;
pub mod nfs;
mod pv;
mod select;
pub mod status;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use volpool_api::{CleanupRequest, LABEL_POOL, NodeVolumes, VolumePool, VolumePoolStatus};

use select::Refusal;

pub use events::Notice;
#[cfg(test)]
use local::pv::ANNOTATION_NODE_UID;
pub use local::pv::LocalPv;
pub use nfs::pv::NfsPv;
pub use nfs::{ExportOp, ExportView};
#[cfg(test)]
use pv::ANNOTATION_RELEASED_AT;

/// A Node as the plan needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Node UID.
    pub uid: String,
    /// Node labels; `None` when unknown (offline mode), which matches every selector.
    pub labels: Option<BTreeMap<String, String>>,
}

/// Everything `plan` looks at: a snapshot of the reflector stores and the time.
#[derive(Clone, Debug)]
pub struct World {
    /// Every VolumePool.
    pub pools: Vec<Arc<VolumePool>>,
    /// Every NodeVolumes report.
    pub reports: Vec<Arc<NodeVolumes>>,
    /// Every Node.
    pub nodes: Vec<NodeInfo>,
    /// PVs labelled `app.kubernetes.io/managed-by=volpool`.
    pub pvs: Vec<Arc<PersistentVolume>>,
    /// Names of existing StorageClasses; `None` when unknown (offline mode).
    pub storage_classes: Option<BTreeSet<String>>,
    /// What the executor read from each NFS pool's export before planning; a pool missing
    /// here is planned as unreachable (nothing created or deleted).
    pub exports: BTreeMap<String, ExportView>,
    /// The time the plan is made at.
    pub now: Timestamp,
}

/// One write the controller must make.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Change {
    /// Create a PV for a newly reported volume.
    CreatePv {
        /// The whole PV, as applied.
        #[serde(serialize_with = "as_pv")]
        pv: LocalPv,
    },
    /// Change a PV the controller made (capacity, health label, release bookkeeping, pool
    /// settings).
    UpdatePv {
        /// The whole PV, as applied.
        #[serde(serialize_with = "as_pv")]
        pv: LocalPv,
        /// The observed resourceVersion: the apply fails if the PV changed or went meanwhile.
        #[serde(skip)]
        resource_version: Option<String>,
        /// Why, for humans.
        reason: String,
    },
    /// Delete a PV (with its UID as a precondition, so a newer PV of that name is safe).
    DeletePv {
        /// PV name.
        name: String,
        /// PV UID.
        uid: String,
        /// Pool of the PV.
        pool: String,
        /// Why, for humans.
        reason: String,
        /// Seconds from release to the end of a successful scrub, when this deletion ends one.
        #[serde(skip_serializing_if = "Option::is_none")]
        scrub_seconds: Option<f64>,
    },
    /// Replace the controller's list of scrub requests of one node.
    SetCleanups {
        /// Node (and NodeVolumes) name.
        node: String,
        /// resourceVersion the list was planned from: the write fails rather than create a
        /// NodeVolumes that was deleted meanwhile.
        #[serde(skip)]
        resource_version: Option<String>,
        /// The full list.
        cleanups: Vec<CleanupRequest>,
    },
    /// Write a pool's status.
    PoolStatus {
        /// Pool name.
        pool: String,
        /// The full status.
        status: VolumePoolStatus,
    },
    /// Publish an Event.
    Event(Notice),
    /// Create or change an NFS PV (created only after its directory was made).
    ApplyNfsPv {
        /// The whole PV, as applied.
        #[serde(serialize_with = "as_nfs_pv")]
        pv: NfsPv,
        /// The observed resourceVersion of an update; `None` for a create.
        #[serde(skip)]
        resource_version: Option<String>,
        /// Why, for humans.
        reason: String,
    },
}

fn as_nfs_pv<S: serde::Serializer>(pv: &NfsPv, serializer: S) -> Result<S::Ok, S::Error> {
    pv.to_pv().serialize(serializer)
}

// NB: plans hold the compact fields (a 10,000-PV plan would otherwise hold 10,000 full
// PersistentVolume structs); the object is built when applied or printed.
fn as_pv<S: serde::Serializer>(pv: &LocalPv, serializer: S) -> Result<S::Ok, S::Error> {
    pv.to_pv().serialize(serializer)
}

/// The result of planning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Writes, deletions first (those of local pools, then those of NFS pools).
    pub changes: Vec<Change>,
    /// Directory work on NFS exports, each with the writes that must wait for it.
    pub ops: Vec<ExportOp>,
    /// Plan again after this long even if nothing changes (a release grace period ends).
    pub wake_after: Option<Duration>,
}

impl Plan {
    /// Plan again after `after` at the latest.
    fn wake(&mut self, after: Duration) {
        self.wake_after = Some(self.wake_after.map_or(after, |w| w.min(after)));
    }
}

/// What each kind's planning starts from.
struct Input<'a> {
    world: &'a World,
    /// Every pool, sorted by name.
    pools: Vec<&'a VolumePool>,
    /// Pools refused this pass (invalid, overlapping), by name.
    refused: HashMap<String, Refusal>,
    /// Observed PVs by their pool label.
    by_pool: HashMap<&'a str, Vec<&'a PersistentVolume>>,
}

impl Input<'_> {
    /// The observed PVs of a pool.
    fn observed(&self, pool: &str) -> &[&PersistentVolume] {
        self.by_pool
            .get(pool)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

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
    if let Some(after) = nfs.wake_after {
        plan.wake(after);
    }
    plan
}
