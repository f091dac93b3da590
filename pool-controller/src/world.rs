//! The reflector stores the plan reads: VolumePools, NodeVolumes, Nodes (metadata only),
//! StorageClasses, the PVs labelled `app.kubernetes.io/managed-by=volpool`, claims, and the
//! Pending pods (only which claims they use).
//!
//! ```text
//!  apiserver ══watch══► reflector ──► Store ──snapshot()──► World ──► plan
//!                           └──► Notify (any change wakes the controller loop)
//! ```
//!
//! After a pass writes, [`Stores::caught_up`] waits until the stores show those writes, so the
//! next pass never plans from a view older than its own writes (which would repeat them).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Node, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec, Volume,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use volpool_api::{LABEL_MANAGED_BY, MANAGED_BY, NodeVolumes, VolumePool};

use crate::error::Error;
use crate::metrics::Metrics;
use crate::plan::claims::NO_PROVISIONER;
use crate::plan::{ClassInfo, NodeInfo, World};

/// Read handles on every store.
#[derive(Clone)]
pub struct Stores {
    pools: Store<VolumePool>,
    /// Every pool, when `pools` holds only those `--pool-selector` picks: which classes some
    /// pool serves (a claim of such a class is another controller's to explain).
    every_pool: Option<Store<VolumePool>>,
    reports: Store<NodeVolumes>,
    nodes: Store<PartialObjectMeta<Node>>,
    pvs: Store<PersistentVolume>,
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

fn spawn<K>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    kind: &'static str,
    notify: Arc<Notify>,
    metrics: Arc<Metrics>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    // NB: managedFields are most of a PV's size and the plan never reads them; dropping them
    // keeps 10,000 PVs in well under half the memory.
    let stream = stream
        .modify(|object: &mut K| {
            object.meta_mut().managed_fields = None;
        })
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => notify.notify_one(),
                Err(source) => {
                    let e = Error::Watch { kind, source };
                    metrics.error(&e);
                    tracing::warn!(error = %e, "watch failed; retrying");
                }
            }
        }
    });
    reader
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
            )
        });
        Stores {
            every_pool,
            pools: spawn(
                watcher(Api::all(client.clone()), pool_config),
                "VolumePool",
                notify.clone(),
                metrics.clone(),
            ),
            reports: spawn(
                watcher(Api::all(client.clone()), all()),
                "NodeVolumes",
                notify.clone(),
                metrics.clone(),
            ),
            nodes: spawn(
                watcher(Api::<PartialObjectMeta<Node>>::all(client.clone()), all()),
                "Node",
                notify.clone(),
                metrics.clone(),
            ),
            pvs: spawn(
                watcher(Api::all(client.clone()), pv_config),
                "PersistentVolume",
                notify.clone(),
                metrics.clone(),
            ),
            classes: spawn(
                watcher(Api::all(client.clone()), all()),
                "StorageClass",
                notify.clone(),
                metrics.clone(),
            ),
            claims: spawn(
                watcher(Api::all(client.clone()), all()),
                "PersistentVolumeClaim",
                notify.clone(),
                metrics.clone(),
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
            ),
        }
    }

    /// Wait until every store has its first full list.
    pub async fn ready(&self) {
        if let Some(every_pool) = &self.every_pool {
            let _ = every_pool.wait_until_ready().await;
        }
        let _ = tokio::join!(
            self.pools.wait_until_ready(),
            self.reports.wait_until_ready(),
            self.nodes.wait_until_ready(),
            self.pvs.wait_until_ready(),
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
            pvs: self.pvs.state(),
            storage_classes: Some(classes),
            claims,
            claims_in_use,
            served_classes,
            explained: BTreeMap::new(),
            exports: BTreeMap::new(),
            now,
        }
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
            WrittenKind::Pv => self
                .pvs
                .get(&ObjectRef::new(&written.name))
                .map(|o| o.metadata.resource_version.clone()),
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
