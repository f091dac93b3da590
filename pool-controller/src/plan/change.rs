//! What the plan decides: the writes ([`Change`]), the directory work on NFS exports that some
//! of them wait for ([`ExportOp`]), and when to look again ([`Plan`]).
//!
//! ```text
//!  plan ──► Plan {changes: [Change], ops: [ExportOp {op, then: [Change]}], wake_after}
//! ```

use std::time::Duration;

use serde::Serialize;
use volpool_api::{CleanupRequest, VolumePoolStatus};

use super::events::Notice;
use super::local::pv::LocalPv;
use super::nfs::pv::NfsPv;

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
    /// (claim UID, reason key) of the claims told why they are Pending by this plan's Events.
    pub explained: Vec<(String, String)>,
}

impl Plan {
    /// Plan again after `after` at the latest.
    pub(super) fn wake(&mut self, after: Duration) {
        self.wake_after = Some(self.wake_after.map_or(after, |w| w.min(after)));
    }
}

/// Directory work for the executor; `then` is applied only after it succeeded.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportOp {
    /// The pool whose export it is.
    pub pool: String,
    /// What to do.
    pub op: Op,
    /// Writes that must wait for the operation.
    pub then: Vec<Change>,
}

/// One directory operation under a pool's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Make the directory (or take the one there) and set its mode.
    MakeDir {
        /// Directory name.
        dir: String,
        /// Mode bits.
        mode: u32,
    },
    /// Remove the directory and its contents.
    Remove {
        /// Directory name.
        dir: String,
    },
    /// Rename the directory.
    Rename {
        /// Directory name.
        from: String,
        /// New name.
        to: String,
    },
}
