//! The pure heart of the controller: from what the cluster holds to the writes that make the
//! PV inventory true. No I/O, no clock (the time is an input), so every lifecycle rule is
//! tested on plain data, and the offline `plan` subcommand runs the very same code.
//!
//! ```text
//!  VolumePools ─┐
//!  NodeVolumes ─┼─► plan(&World) ─► [CreatePv, UpdatePv, DeletePv, SetCleanups, PoolStatus, Event]
//!  Nodes ───────┤                     + when to look again (release grace periods)
//!  PVs ─────────┘
//! ```
//!
//! Safety rules kept here: a PV with a claimRef is never deleted except after its volume was
//! scrubbed (or its pool asks for no scrub); a scrub is only asked for when the node still
//! reports the very identity the PV was made for; a pool that fails validation gets a
//! condition and no other change.

pub mod nfs;
mod nfs_pv;
mod nfs_status;
mod pool;
mod pv;
mod select;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use volpool_api::{CleanupRequest, LABEL_POOL, NodeVolumes, VolumePool, VolumePoolStatus};

pub use nfs_pv::NfsPv;
#[cfg(test)]
use pv::{ANNOTATION_NODE_UID, ANNOTATION_RELEASED_AT};
pub use pv::{LocalPv, Phase};

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

/// An Event to publish (events.k8s.io/v1).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notice {
    /// The object the Event is about.
    pub regarding: ObjectReference,
    /// Warning rather than Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: String,
    /// PascalCase action taken.
    pub action: String,
    /// What happened, for humans.
    pub note: String,
}

/// The result of planning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Writes, deletions first.
    pub changes: Vec<Change>,
    /// Plan again after this long even if nothing changes (a release grace period ends).
    pub wake_after: Option<Duration>,
}

/// Decide what must change so the PVs match the pools and the nodes' reports.
pub fn plan(world: &World) -> Plan {
    let nodes: HashMap<&str, &NodeInfo> =
        world.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let reports: BTreeMap<&str, &NodeVolumes> = world
        .reports
        .iter()
        .filter_map(|r| Some((r.metadata.name.as_deref()?, r.as_ref())))
        .collect();
    let mut pvs_by_pool: HashMap<&str, Vec<&PersistentVolume>> = HashMap::new();
    for pv in &world.pvs {
        if let Some(pool) = pv.metadata.labels.as_ref().and_then(|l| l.get(LABEL_POOL)) {
            pvs_by_pool.entry(pool.as_str()).or_default().push(pv);
        }
    }
    let mut pools: Vec<&VolumePool> = world
        .pools
        .iter()
        .map(Arc::as_ref)
        .filter(|p| p.spec.local.is_some())
        .collect();
    pools.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let refusals = select::refusals(&pools);

    let mut out = pool::Output::default();
    let mut planned: HashSet<&str> = HashSet::new();
    for pool in pools {
        let name = pool.metadata.name.as_deref().unwrap_or_default();
        let observed = pvs_by_pool.get(name).map(Vec::as_slice).unwrap_or_default();
        let input = pool::PoolInput {
            pool,
            observed,
            nodes: &nodes,
            reports: &reports,
            storage_classes: world.storage_classes.as_ref(),
            now: world.now,
        };
        match refusals.get(name) {
            Some(refusal) => pool::refuse(&input, refusal, &mut out),
            None => {
                planned.insert(name);
                pool::plan_pool(&input, &mut out);
            }
        }
    }

    // Requests for PVs of pools not planned this pass (invalid, deleted, nfs) stay as they
    // are: bad input never cancels a scrub nor starts one.
    let existing: HashMap<&str, &PersistentVolume> = world
        .pvs
        .iter()
        .filter_map(|pv| Some((pv.metadata.name.as_deref()?, pv.as_ref())))
        .collect();
    let mut cleanup_changes = Vec::new();
    for (node, report) in &reports {
        let mut wanted = out.cleanups.remove(*node).unwrap_or_default();
        for request in &report.spec.cleanups {
            let pool = existing
                .get(request.persistent_volume.as_str())
                .and_then(|pv| pv.metadata.labels.as_ref()?.get(LABEL_POOL));
            if pool.is_some_and(|p| !planned.contains(p.as_str())) {
                wanted.push(request.clone());
            }
        }
        wanted.sort_by(|a, b| a.persistent_volume.cmp(&b.persistent_volume));
        if wanted != report.spec.cleanups {
            cleanup_changes.push(Change::SetCleanups {
                node: node.to_string(),
                resource_version: report.metadata.resource_version.clone(),
                cleanups: wanted,
            });
        }
    }

    let mut changes = out.deletes;
    changes.extend(out.applies);
    changes.extend(cleanup_changes);
    changes.extend(out.statuses);
    changes.extend(out.events.into_iter().map(Change::Event));
    Plan {
        changes,
        wake_after: out.wake_after,
    }
}
