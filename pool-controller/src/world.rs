//! The reflector stores the plan reads: VolumePools, NodeVolumes, Nodes (metadata only),
//! StorageClasses and the PVs labelled `app.kubernetes.io/managed-by=volpool`.
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
use k8s_openapi::api::core::v1::{Node, PersistentVolume};
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
use crate::plan::{NodeInfo, World};

/// Read handles on every store.
#[derive(Clone)]
pub struct Stores {
    pools: Store<VolumePool>,
    reports: Store<NodeVolumes>,
    nodes: Store<PartialObjectMeta<Node>>,
    pvs: Store<PersistentVolume>,
    classes: Store<PartialObjectMeta<StorageClass>>,
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
        Stores {
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
                watcher(
                    Api::<PartialObjectMeta<StorageClass>>::all(client.clone()),
                    all(),
                ),
                "StorageClass",
                notify,
                metrics,
            ),
        }
    }

    /// Wait until every store has its first full list.
    pub async fn ready(&self) {
        let _ = tokio::join!(
            self.pools.wait_until_ready(),
            self.reports.wait_until_ready(),
            self.nodes.wait_until_ready(),
            self.pvs.wait_until_ready(),
            self.classes.wait_until_ready(),
        );
    }

    /// Everything the plan needs, as of now, but the exports (read by `exportfs::observe`).
    /// No API call.
    pub fn snapshot(&self, now: Timestamp) -> World {
        World {
            pools: self.pools.state(),
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
            storage_classes: Some(
                self.classes
                    .state()
                    .iter()
                    .filter_map(|c| c.metadata.name.clone())
                    .collect::<BTreeSet<_>>(),
            ),
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
