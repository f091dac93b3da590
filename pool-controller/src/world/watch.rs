//! The watch tasks behind the stores: each keeps its store current, wakes the controller loop
//! on every change, and notes which nodes a change touched ([`Dirty`]), so a pass plans only
//! those.
//!
//! ```text
//!  watch ──► reflector Store (pools, reports, Nodes, classes, claims, pods) ──► Notify
//!  watch ──► PvStore (compact)                                               └─► Dirty {nodes}
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use super::pvs::PvStore;
use crate::error::Error;
use crate::metrics::Metrics;

/// The nodes whose report, Node or PVs changed since the last pass took them.
#[derive(Debug, Default)]
pub struct Dirty {
    /// Everything may have changed (a watch listed again).
    pub all: bool,
    /// These nodes changed.
    pub nodes: BTreeSet<String>,
}

/// [`Dirty`], shared by the watch tasks and the loop.
pub type SharedDirty = Arc<Mutex<Dirty>>;

/// Mark `node` (or everything) as changed.
pub fn mark(dirty: &SharedDirty, node: Option<&str>) {
    let mut dirty = dirty.lock().unwrap_or_else(|e| e.into_inner());
    match node {
        Some(node) => {
            if !dirty.all && !dirty.nodes.contains(node) {
                dirty.nodes.insert(node.to_string());
            }
        }
        None => dirty.all = true,
    }
}

/// Mark the object's name as a changed node; a finished re-list marks everything.
pub fn mark_by_name<K: Resource>(dirty: &SharedDirty, event: &watcher::Event<K>) -> bool {
    match event {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
            mark(dirty, Some(o.meta().name.as_deref().unwrap_or_default()));
        }
        watcher::Event::InitDone => mark(dirty, None),
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
    }
    true
}

volpool_api::watch_backoff!();

/// For the Node watch: mark a node only when what the plan reads of it (UID, labels) changed,
/// not on each status update of its kubelet. Returns whether the event matters.
pub fn node_marker(
    dirty: SharedDirty,
) -> impl FnMut(&watcher::Event<PartialObjectMeta<Node>>) -> bool + Send + 'static {
    let mut seen: HashMap<String, u64> = HashMap::new();
    move |event| {
        let read = |node: &PartialObjectMeta<Node>| {
            let mut hasher = DefaultHasher::new();
            (&node.metadata.uid, &node.metadata.labels).hash(&mut hasher);
            let name = node.metadata.name.clone().unwrap_or_default();
            (name, hasher.finish())
        };
        match event {
            watcher::Event::Apply(node) => {
                let (name, facts) = read(node);
                let changed = seen.insert(name.clone(), facts) != Some(facts);
                if changed {
                    mark(&dirty, Some(&name));
                }
                changed
            }
            watcher::Event::Delete(node) => {
                let (name, _) = read(node);
                seen.remove(&name);
                mark(&dirty, Some(&name));
                true
            }
            watcher::Event::InitApply(node) => {
                let (name, facts) = read(node);
                seen.insert(name, facts);
                false
            }
            watcher::Event::Init => false,
            watcher::Event::InitDone => {
                mark(&dirty, None);
                true
            }
        }
    }
}

/// Keep a reflector store of `stream`; each event goes through `on_event`, and wakes `notify`
/// when that says it matters.
pub fn spawn<K>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    kind: &'static str,
    notify: Arc<Notify>,
    metrics: Arc<Metrics>,
    mut on_event: impl FnMut(&watcher::Event<K>) -> bool + Send + 'static,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    // NB: managedFields are most of an object's size and the plan never reads them.
    let stream = stream
        .modify(|object: &mut K| {
            object.meta_mut().managed_fields = None;
        })
        .backoff(Retry::default())
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if on_event(&event) {
                        notify.notify_one();
                    }
                }
                Err(source) => failed(kind, source, &metrics),
            }
        }
    });
    reader
}

fn failed(kind: &'static str, source: watcher::Error, metrics: &Metrics) {
    let e = Error::Watch { kind, source };
    metrics.error(&e);
    tracing::warn!(error = %e, "watch failed; retrying");
}

/// Keep `store` current from a PV watch; `ready` turns true after the first full list.
pub fn spawn_pvs(
    stream: impl futures::Stream<Item = Result<watcher::Event<PersistentVolume>, watcher::Error>>
    + Send
    + 'static,
    store: Arc<RwLock<PvStore>>,
    dirty: SharedDirty,
    ready: watch::Sender<bool>,
    notify: Arc<Notify>,
    metrics: Arc<Metrics>,
) {
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream.backoff(Retry::default()));
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(source) => {
                    failed("PersistentVolume", source, &metrics);
                    continue;
                }
            };
            let touched = {
                let mut store = store.write().unwrap_or_else(|e| e.into_inner());
                match &event {
                    watcher::Event::Apply(pv) | watcher::Event::InitApply(pv) => store.apply(pv),
                    watcher::Event::Delete(pv) => {
                        store.remove(pv.metadata.name.as_deref().unwrap_or_default())
                    }
                    watcher::Event::Init => {
                        store.relist();
                        Vec::new()
                    }
                    watcher::Event::InitDone => {
                        store.relisted();
                        mark(&dirty, None);
                        ready.send_replace(true);
                        Vec::new()
                    }
                }
            };
            if !matches!(event, watcher::Event::InitApply(_)) {
                for node in touched {
                    mark(&dirty, Some(&node));
                }
            }
            notify.notify_one();
        }
    });
}
