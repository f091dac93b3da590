//! What the plan looks at: a snapshot of the cluster ([`World`]), the per-pass index each
//! kind of pool is planned from ([`Input`]), and where the local pools' PVs come from
//! ([`LocalPvs`]: the world's own, or the controller's compact store, node by node).
//!
//! ```text
//!  stores + exports read ──► World ──► Input {pools sorted, refusals, PVs by pool} ──► local, nfs
//!  World.pvs or the PV store ──► LocalPvs (the PVs of the nodes a pass plans) ──► local
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::jiff::Timestamp;
use volpool_api::{LABEL_POOL, NodeVolumes, VolumePool};

use super::local::pv::node_of;
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

/// Which nodes a pass plans for the local pools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every node: nothing from earlier passes is reused.
    All,
    /// These nodes (their report, Node or PVs changed, or their last plan wrote); every other
    /// node's part is taken from earlier passes.
    Nodes(BTreeSet<String>),
}

/// The local pools' PVs, as a pass reads them: a node's at a time, so a pass over a few nodes
/// never touches the others'.
pub trait LocalPvs {
    /// The PVs on `node`: pinned to it by their node affinity, or (PVs without one) labelled
    /// `volpool.io/node: <node>`.
    fn on_node(&self, node: &str) -> Vec<Arc<PersistentVolume>>;
    /// Every node some PV is on (as [`LocalPvs::on_node`] reads it).
    fn nodes(&self) -> Vec<String>;
    /// The PVs labelled `volpool.io/pool: <pool>`.
    fn of_pool(&self, pool: &str) -> Vec<Arc<PersistentVolume>>;
    /// The PV of that name.
    fn get(&self, name: &str) -> Option<Arc<PersistentVolume>>;
}

/// The world's own PVs, indexed.
pub struct WorldPvs<'a> {
    by_node: BTreeMap<&'a str, Vec<&'a Arc<PersistentVolume>>>,
    by_name: HashMap<&'a str, &'a Arc<PersistentVolume>>,
    all: &'a [Arc<PersistentVolume>],
}

fn label<'a>(pv: &'a PersistentVolume, key: &str) -> Option<&'a str> {
    pv.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

impl<'a> WorldPvs<'a> {
    /// Index `pvs`.
    pub fn new(pvs: &'a [Arc<PersistentVolume>]) -> WorldPvs<'a> {
        let mut by_node: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        let mut by_name = HashMap::new();
        for pv in pvs {
            by_node
                .entry(node_of(pv).unwrap_or_default())
                .or_default()
                .push(pv);
            if let Some(name) = pv.metadata.name.as_deref() {
                by_name.insert(name, pv);
            }
        }
        WorldPvs {
            by_node,
            by_name,
            all: pvs,
        }
    }
}

impl LocalPvs for WorldPvs<'_> {
    fn on_node(&self, node: &str) -> Vec<Arc<PersistentVolume>> {
        let pvs = self.by_node.get(node).into_iter().flatten();
        pvs.map(|pv| Arc::clone(pv)).collect()
    }

    fn nodes(&self) -> Vec<String> {
        self.by_node.keys().map(|n| n.to_string()).collect()
    }

    fn of_pool(&self, pool: &str) -> Vec<Arc<PersistentVolume>> {
        let mine = self
            .all
            .iter()
            .filter(|pv| label(pv, LABEL_POOL) == Some(pool));
        mine.cloned().collect()
    }

    fn get(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.by_name.get(name).map(|pv| Arc::clone(pv))
    }
}
