//! The stores the plan reads: VolumePools, NodeVolumes, Nodes (metadata only),
//! StorageClasses, claims and the Pending pods (only which claims they use) in reflector
//! stores, and the PVs labelled `app.kubernetes.io/managed-by=volpool` in a compact store of
//! their own (`pvs.rs`). Each keeps only what the plan reads.
//!
//! ```text
//!  apiserver ══watch══► reflector / PvStore ──snapshot()──► World (NFS pools' PVs) ──► plan
//!                           │                 └─pv_view()──► the local pools' PVs, node by node
//!                           ├──► Notify (any change wakes the controller loop)
//!                           └──► Dirty (the nodes a change touched: the next pass plans those)
//! ```
//!
//! After a pass writes, [`Stores::caught_up`] waits until the stores show those writes, so the
//! next pass never plans from a view older than its own writes (which would repeat them).

mod pvs;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, PodSpec, Volume};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;
use volpool_api::{LABEL_MANAGED_BY, MANAGED_BY, NodeVolumes, VolumePool};

use self::pvs::PvStore;
pub use self::pvs::PvView;
pub use self::watch::Dirty;
use self::watch::{SharedDirty, mark_by_name, node_marker, spawn, spawn_pvs};
use crate::metrics::Metrics;
use crate::plan::claims::NO_PROVISIONER;
use crate::plan::{ClassInfo, LocalPvs, NodeInfo, World};

/// Read handles on every store.
#[derive(Clone)]
pub struct Stores {
    pools: Store<VolumePool>,
    /// Every pool, when `pools` holds only those `--pool-selector` picks: which classes some
    /// pool serves (a claim of such a class is another controller's to explain).
    every_pool: Option<Store<VolumePool>>,
    reports: Store<NodeVolumes>,
    nodes: Store<PartialObjectMeta<Node>>,
    pvs: Arc<RwLock<PvStore>>,
    pvs_ready: tokio::sync::watch::Receiver<bool>,
    dirty: SharedDirty,
    classes: Store<StorageClass>,
    claims: Store<PersistentVolumeClaim>,
    pending_pods: Store<Pod>,
}

/// An object a pass wrote (or deleted: `resource_version` is `None`).
#[derive(Clone, Debug)]
pub struct Written {
    /// Which store shows it.
    pub kind: WrittenKind,
    /// Object name.
    pub name: String,
    /// The resourceVersion the write returned.
    pub resource_version: Option<String>,
}

/// Kinds a pass writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrittenKind {
    /// A PersistentVolume.
    Pv,
    /// A NodeVolumes object.
    Report,
    /// A VolumePool (status).
    Pool,
}

impl Stores {
    /// Start every watch; each change wakes `notify`. `pool_selector` limits the pools planned.
    pub fn start(
        client: &Client,
        pool_selector: Option<&str>,
        notify: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Stores {
        let mut pool_config = watcher::Config::default();
        if let Some(selector) = pool_selector {
            pool_config = pool_config.labels(selector);
        }
        let pv_config =
            watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
        let all = watcher::Config::default;
        let every_pool = pool_selector.map(|_| {
            spawn(
                watcher(Api::<VolumePool>::all(client.clone()), all()),
                "VolumePool",
                notify.clone(),
                metrics.clone(),
                |_| true,
            )
        });
        let dirty = SharedDirty::default();
        let (ready, pvs_ready) = tokio::sync::watch::channel(false);
        let pvs = Arc::new(RwLock::new(PvStore::default()));
        spawn_pvs(
            watcher(Api::all(client.clone()), pv_config),
            pvs.clone(),
            dirty.clone(),
            ready,
            notify.clone(),
            metrics.clone(),
        );
        let for_reports = dirty.clone();
        Stores {
            every_pool,
            pools: spawn(
                watcher(Api::all(client.clone()), pool_config),
                "VolumePool",
                notify.clone(),
                metrics.clone(),
                |_| true,
            ),
            reports: spawn(
                watcher(Api::all(client.clone()), all()).modify(strip_report),
                "NodeVolumes",
                notify.clone(),
                metrics.clone(),
                move |event| mark_by_name(&for_reports, event),
            ),
            nodes: spawn(
                watcher(Api::<PartialObjectMeta<Node>>::all(client.clone()), all()),
                "Node",
                notify.clone(),
                metrics.clone(),
                node_marker(dirty.clone()),
            ),
            pvs,
            pvs_ready,
            dirty,
            classes: spawn(
                watcher(Api::all(client.clone()), all()),
                "StorageClass",
                notify.clone(),
                metrics.clone(),
                |_| true,
            ),
            claims: spawn(
                watcher(Api::all(client.clone()), all()),
                "PersistentVolumeClaim",
                notify.clone(),
                metrics.clone(),
                |_| true,
            ),
            // NB: only Pending pods, and of those only the volumes: a claim of a
            // WaitForFirstConsumer class is explained once a pod waits for it.
            pending_pods: spawn(
                watcher(
                    Api::<Pod>::all(client.clone()),
                    all().fields("status.phase=Pending"),
                )
                .modify(|pod: &mut Pod| {
                    let volumes = pod.spec.take().map(|s| s.volumes).unwrap_or_default();
                    pod.spec = Some(PodSpec {
                        volumes,
                        containers: Vec::new(),
                        ..Default::default()
                    });
                    pod.status = None;
                }),
                "Pod",
                notify,
                metrics,
                |_| true,
            ),
        }
    }

    /// Wait until every store has its first full list.
    pub async fn ready(&self) {
        if let Some(every_pool) = &self.every_pool {
            let _ = every_pool.wait_until_ready().await;
        }
        let mut pvs_ready = self.pvs_ready.clone();
        let _ = tokio::join!(
            self.pools.wait_until_ready(),
            self.reports.wait_until_ready(),
            self.nodes.wait_until_ready(),
            pvs_ready.wait_for(|ready| *ready),
            self.classes.wait_until_ready(),
            self.claims.wait_until_ready(),
            self.pending_pods.wait_until_ready(),
        );
    }

    /// Everything the plan needs, as of now, but the exports (read by `exportfs::observe`) and
    /// what the loop remembers (`explained`). No API call.
    pub fn snapshot(&self, now: Timestamp) -> World {
        let pools = self.pools.state();
        let classes: BTreeMap<String, ClassInfo> = self
            .classes
            .state()
            .iter()
            .filter_map(|c| {
                let info = ClassInfo {
                    provisioner: c.provisioner.clone(),
                    wait_for_consumer: c.volume_binding_mode.as_deref()
                        == Some("WaitForFirstConsumer"),
                };
                Some((c.metadata.name.clone()?, info))
            })
            .collect();
        let every_pool = self.every_pool.as_ref().map(Store::state);
        let served_classes: BTreeSet<String> = every_pool
            .as_ref()
            .unwrap_or(&pools)
            .iter()
            .map(|p| p.spec.storage_class_name.clone())
            .collect();
        let served: BTreeSet<&str> = pools
            .iter()
            .map(|p| p.spec.storage_class_name.as_str())
            .chain(
                classes
                    .iter()
                    .filter(|(_, c)| c.provisioner == NO_PROVISIONER)
                    .map(|(name, _)| name.as_str()),
            )
            .collect();
        let claims = self
            .claims
            .state()
            .into_iter()
            .filter(|c| {
                let class = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.storage_class_name.as_deref());
                class.is_some_and(|class| served.contains(class))
            })
            .collect();
        let claims_in_use = self
            .pending_pods
            .state()
            .iter()
            .flat_map(|pod| {
                let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                pod.spec
                    .iter()
                    .flat_map(|s| s.volumes.iter().flatten())
                    .filter_map(|v: &Volume| v.persistent_volume_claim.as_ref())
                    .map(move |c| (namespace.clone(), c.claim_name.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        World {
            pools,
            reports: self.reports.state(),
            nodes: self
                .nodes
                .state()
                .iter()
                .map(|n| NodeInfo {
                    name: n.metadata.name.clone().unwrap_or_default(),
                    uid: n.metadata.uid.clone().unwrap_or_default(),
                    labels: Some(n.metadata.labels.clone().unwrap_or_default()),
                })
                .collect(),
            pvs: self.nfs_pvs(),
            storage_classes: Some(classes),
            claims,
            claims_in_use,
            served_classes,
            explained: BTreeMap::new(),
            exports: BTreeMap::new(),
            now,
        }
    }

    /// The PVs of the NFS pools (the local pools' are read node by node through
    /// [`Stores::pv_view`]).
    fn nfs_pvs(&self) -> Vec<Arc<k8s_openapi::api::core::v1::PersistentVolume>> {
        let view = self.pv_view();
        let nfs = self.pools.state();
        let nfs = nfs.iter().filter(|p| p.spec.local.is_none());
        nfs.flat_map(|p| view.of_pool(p.metadata.name.as_deref().unwrap_or_default()))
            .collect()
    }

    /// The PV store as the plan reads it.
    pub fn pv_view(&self) -> PvView<'_> {
        PvView(&self.pvs)
    }

    /// The nodes that changed since the last call (everything on the first).
    pub fn take_dirty(&self) -> Dirty {
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *dirty)
    }

    /// Mark nodes to plan again next pass.
    pub fn mark_dirty(&self, nodes: impl IntoIterator<Item = String>) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        dirty.nodes.extend(nodes);
    }

    /// Wait (at most `timeout`) until the stores show every write of the last pass. Returns
    /// whether they do.
    pub async fn caught_up(&self, written: &[Written], timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if written.iter().all(|w| self.shows(w)) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn shows(&self, written: &Written) -> bool {
        let seen = match written.kind {
            WrittenKind::Pv => {
                let pvs = self.pvs.read().unwrap_or_else(|e| e.into_inner());
                let pv = pvs.get(&written.name);
                pv.map(|pv| pv.resource_version().map(String::from))
            }
            WrittenKind::Report => self
                .reports
                .get(&ObjectRef::new(&written.name))
                .map(|o| o.metadata.resource_version.clone()),
            WrittenKind::Pool => self
                .pools
                .get(&ObjectRef::new(&written.name))
                .map(|o| o.metadata.resource_version.clone()),
        };
        match (&written.resource_version, seen) {
            (None, seen) => seen.is_none(),
            (Some(_), None) => false,
            (Some(want), Some(seen)) => match (
                want.parse::<u64>(),
                seen.as_deref().unwrap_or_default().parse::<u64>(),
            ) {
                (Ok(want), Ok(seen)) => seen >= want,
                _ => seen.as_deref() == Some(want.as_str()),
            },
        }
    }
}

/// Drop what the plan never reads from a report: the agent's node facts (limits, network),
/// each volume's filesystem, device and message, and most of the metadata.
fn strip_report(report: &mut NodeVolumes) {
    let meta = &mut report.metadata;
    meta.owner_references = None;
    meta.annotations = None;
    meta.labels = None;
    if let Some(status) = &mut report.status {
        status.limits = None;
        status.network = None;
        status.machine_id = String::new();
        status.agent_version = String::new();
        for volume in &mut status.volumes {
            volume.fs_type = String::new();
            volume.device = String::new();
            volume.message = String::new();
        }
    }
}
