//! What the plan looks at: a snapshot of the cluster ([`World`]), and the per-pass index each
//! kind of pool is planned from ([`Input`]).
//!
//! ```text
//!  stores + exports read ──► World ──► Input {pools sorted, refusals, PVs by pool} ──► local, nfs
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::jiff::Timestamp;
use volpool_api::{NodeVolumes, VolumePool};

use super::nfs::export::ExportView;
use super::select::Refusal;

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

/// A StorageClass as the plan needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassInfo {
    /// `provisioner`.
    pub provisioner: String,
    /// `volumeBindingMode: WaitForFirstConsumer`: the scheduler picks the node and binds.
    pub wait_for_consumer: bool,
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
    /// Existing StorageClasses by name; `None` when unknown (offline mode).
    pub storage_classes: Option<BTreeMap<String, ClassInfo>>,
    /// Claims of the classes volpool serves: those a pool names, and those whose StorageClass
    /// has provisioner `kubernetes.io/no-provisioner`.
    pub claims: Vec<Arc<PersistentVolumeClaim>>,
    /// Classes some VolumePool names, planned here or not (`--pool-selector`): a claim of
    /// another class with provisioner `kubernetes.io/no-provisioner` is told no pool serves it.
    pub served_classes: BTreeSet<String>,
    /// Claims (namespace, name) that a Pending pod uses.
    pub claims_in_use: BTreeSet<(String, String)>,
    /// When a claim (UID) was last told a reason (key) it is Pending.
    pub explained: BTreeMap<(String, String), Timestamp>,
    /// What the executor read from each NFS pool's export before planning; a pool missing
    /// here is planned as unreachable (nothing created or deleted).
    pub exports: BTreeMap<String, ExportView>,
    /// The time the plan is made at.
    pub now: Timestamp,
}

/// What each kind's planning starts from.
pub struct Input<'a> {
    pub world: &'a World,
    /// Every pool, sorted by name.
    pub pools: Vec<&'a VolumePool>,
    /// Pools refused this pass (invalid, overlapping), by name.
    pub refused: HashMap<String, Refusal>,
    /// Observed PVs by their pool label.
    pub by_pool: HashMap<&'a str, Vec<&'a PersistentVolume>>,
}

impl Input<'_> {
    /// The observed PVs of a pool.
    pub fn observed(&self, pool: &str) -> &[&PersistentVolume] {
        self.by_pool
            .get(pool)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}
