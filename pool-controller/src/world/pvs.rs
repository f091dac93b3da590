//! The store of volpool's PVs, kept compact: only what the plan reads, in a fraction of a
//! `PersistentVolume`'s memory (the struct alone is 3.5 KB, nearly all of it volume sources
//! a volpool PV never has), with the repeated strings (label keys and values, access modes,
//! class) shared. A pass turns back into `PersistentVolume`s only the PVs it plans.
//!
//! ```text
//!  watch ──► StoredPv::from_pv ──► PvStore {by name, names by node} ──► to_pv (planned nodes)
//!                                        └──► Dirty (the nodes a change touched)
//! ```
//!
//! A local PV's node is the one its node affinity pins it to (immutable), not its
//! `volpool.io/node` label (anyone can edit it); only a PV without such an affinity is filed
//! under its label.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{
    LocalVolumeSource, NFSVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeSpec,
    PersistentVolumeStatus, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use volpool_api::{LABEL_HOSTNAME, LABEL_NODE, LABEL_POOL, LABEL_VOLUME_ID};

use crate::plan::pv::affinity_in;
use crate::plan::{LocalPvs, READ_ANNOTATIONS, affinity_node};

type Pairs<V> = Option<Box<[(Arc<str>, V)]>>;

/// A PV as the plan reads it (its name is the store's key).
#[derive(Debug)]
pub struct StoredPv {
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    labels: Pairs<Arc<str>>,
    /// Only the annotations the plan reads.
    annotations: Pairs<Box<str>>,
    spec: Option<StoredSpec>,
    phase: Option<Arc<str>>,
}

#[derive(Debug)]
struct StoredSpec {
    /// `capacity.storage`.
    storage: Option<Box<str>>,
    access_modes: Option<Box<[Arc<str>]>>,
    storage_class: Option<Arc<str>>,
    reclaim_policy: Option<Arc<str>>,
    mount_options: Option<Box<[Box<str>]>>,
    volume_mode: Option<Arc<str>>,
    local_path: Option<Box<str>>,
    nfs: Option<Box<NFSVolumeSource>>,
    /// Kept for NFS PVs only (the NFS plan reads it).
    node_affinity: Option<Box<VolumeNodeAffinity>>,
    /// A local PV's node affinity: the one node it names (`local::pv::affinity_node`).
    local_node: Option<Arc<str>>,
    claim_ref: Option<Box<ObjectReference>>,
}

/// Shares equal strings.
#[derive(Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(text) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(text);
        self.0.insert(shared.clone());
        shared
    }

    /// Forget the strings no stored PV uses any more.
    fn prune(&mut self) {
        self.0.retain(|s| Arc::strong_count(s) > 1);
    }
}

fn to_map<V: AsRef<str>>(pairs: &[(Arc<str>, V)]) -> BTreeMap<String, String> {
    let pairs = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_ref().to_string()));
    pairs.collect()
}

fn boxed(text: &Option<String>) -> Option<Box<str>> {
    text.as_deref().map(Box::from)
}

impl StoredSpec {
    fn new(spec: &PersistentVolumeSpec, strings: &mut Interner) -> StoredSpec {
        let mut shared = |text: &Option<String>| text.as_deref().map(|t| strings.get(t));
        let storage_class = shared(&spec.storage_class_name);
        let reclaim_policy = shared(&spec.persistent_volume_reclaim_policy);
        let volume_mode = shared(&spec.volume_mode);
        let local_node = affinity_node(spec).map(|n| strings.get(n));
        StoredSpec {
            storage: spec
                .capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .map(|q| q.0.as_str().into()),
            access_modes: spec
                .access_modes
                .as_ref()
                .map(|modes| modes.iter().map(|m| strings.get(m)).collect()),
            storage_class,
            reclaim_policy,
            mount_options: spec
                .mount_options
                .as_ref()
                .map(|o| o.iter().map(|m| m.as_str().into()).collect()),
            volume_mode,
            local_path: spec.local.as_ref().map(|l| l.path.as_str().into()),
            nfs: spec.nfs.clone().map(Box::new),
            node_affinity: spec
                .nfs
                .as_ref()
                .and(spec.node_affinity.clone())
                .map(Box::new),
            local_node,
            claim_ref: spec.claim_ref.clone().map(Box::new),
        }
    }

    fn to_spec(&self) -> PersistentVolumeSpec {
        let text = |s: &Option<Arc<str>>| s.as_deref().map(String::from);
        PersistentVolumeSpec {
            capacity: self
                .storage
                .as_deref()
                .map(|q| BTreeMap::from([("storage".to_string(), Quantity(q.into()))])),
            access_modes: self
                .access_modes
                .as_ref()
                .map(|m| m.iter().map(|m| m.to_string()).collect()),
            storage_class_name: text(&self.storage_class),
            persistent_volume_reclaim_policy: text(&self.reclaim_policy),
            mount_options: self
                .mount_options
                .as_ref()
                .map(|o| o.iter().map(|m| m.to_string()).collect()),
            volume_mode: text(&self.volume_mode),
            local: self.local_path.as_deref().map(|path| LocalVolumeSource {
                path: path.into(),
                fs_type: None,
            }),
            nfs: self.nfs.as_deref().cloned(),
            node_affinity: match &self.local_node {
                Some(node) => Some(affinity_in(LABEL_HOSTNAME, node.to_string())),
                None => self.node_affinity.as_deref().cloned(),
            },
            claim_ref: self.claim_ref.as_deref().cloned(),
            ..Default::default()
        }
    }
}

impl StoredPv {
    fn new(pv: &PersistentVolume, strings: &mut Interner) -> StoredPv {
        let meta = &pv.metadata;
        let labels = meta.labels.as_ref().map(|labels| {
            labels
                .iter()
                .map(|(k, v)| {
                    // NB: the volume ID is the one label value no two PVs share.
                    let value = if k == LABEL_VOLUME_ID {
                        Arc::from(v.as_str())
                    } else {
                        strings.get(v)
                    };
                    (strings.get(k), value)
                })
                .collect()
        });
        let annotations = meta.annotations.as_ref().map(|annotations| {
            annotations
                .iter()
                .filter(|(k, _)| READ_ANNOTATIONS.contains(&k.as_str()))
                .map(|(k, v)| (strings.get(k), v.as_str().into()))
                .collect()
        });
        StoredPv {
            uid: boxed(&meta.uid),
            resource_version: boxed(&meta.resource_version),
            labels,
            annotations,
            spec: pv.spec.as_ref().map(|s| StoredSpec::new(s, strings)),
            phase: pv
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .map(|p| strings.get(p)),
        }
    }

    /// The PV back, with every field the plan reads.
    pub fn to_pv(&self, name: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: self.uid.as_deref().map(String::from),
                resource_version: self.resource_version.as_deref().map(String::from),
                labels: self.labels.as_deref().map(to_map),
                annotations: self.annotations.as_deref().map(to_map),
                ..Default::default()
            },
            spec: self.spec.as_ref().map(StoredSpec::to_spec),
            status: self.phase.as_deref().map(|p| PersistentVolumeStatus {
                phase: Some(p.into()),
                ..Default::default()
            }),
        }
    }

    /// The value of a label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .as_deref()?
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    /// The resourceVersion.
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }
}

type Index = HashMap<Arc<str>, BTreeSet<Arc<str>>>;

/// Every stored PV by name, and their names by node (see the module docs) and by pool label
/// ("" for PVs without one).
#[derive(Default)]
pub struct PvStore {
    by_name: HashMap<Arc<str>, StoredPv>,
    by_node: Index,
    by_pool: Index,
    strings: Interner,
    /// Names seen since a re-list began (`None` outside one).
    relisting: Option<HashSet<Arc<str>>>,
}

impl PvStore {
    /// Store a PV (added or changed); returns the nodes it was and is on.
    pub fn apply(&mut self, pv: &PersistentVolume) -> Vec<Arc<str>> {
        let Some(name) = pv.metadata.name.as_deref() else {
            return Vec::new();
        };
        let stored = StoredPv::new(pv, &mut self.strings);
        let mut touched = self.remove(name);
        // NB: names are unique: sharing them through the interner would only cost an entry.
        let name: Arc<str> = Arc::from(name);
        let node = self.node_key(&stored);
        self.by_node
            .entry(node.clone())
            .or_default()
            .insert(name.clone());
        let pool = self.key(&stored, LABEL_POOL);
        self.by_pool.entry(pool).or_default().insert(name.clone());
        if let Some(seen) = &mut self.relisting {
            seen.insert(name.clone());
        }
        self.by_name.insert(name, stored);
        touched.push(node);
        touched
    }

    /// Forget a PV; returns the node it was on.
    pub fn remove(&mut self, name: &str) -> Vec<Arc<str>> {
        let Some((name, old)) = self.by_name.remove_entry(name) else {
            return Vec::new();
        };
        let node = self.node_key(&old);
        unindex(&mut self.by_node, &node, &name);
        let pool = self.key(&old, LABEL_POOL);
        unindex(&mut self.by_pool, &pool, &name);
        vec![node]
    }

    /// A re-list begins: PVs it does not bring are forgotten at [`PvStore::relisted`].
    pub fn relist(&mut self) {
        self.relisting = Some(HashSet::new());
    }

    /// The re-list is complete: forget the PVs it did not bring.
    pub fn relisted(&mut self) {
        let Some(seen) = self.relisting.take() else {
            return;
        };
        let gone: Vec<Arc<str>> = self
            .by_name
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.remove(&name);
        }
        self.strings.prune();
    }

    fn key(&mut self, pv: &StoredPv, label: &str) -> Arc<str> {
        self.strings.get(pv.label(label).unwrap_or_default())
    }

    /// The node a PV is filed under: its node affinity's, else its label's.
    fn node_key(&mut self, pv: &StoredPv) -> Arc<str> {
        match pv.spec.as_ref().and_then(|s| s.local_node.clone()) {
            Some(node) => node,
            None => self.key(pv, LABEL_NODE),
        }
    }

    /// A stored PV.
    pub fn get(&self, name: &str) -> Option<&StoredPv> {
        self.by_name.get(name)
    }

    /// The PVs on `node` ("" for those with neither a node affinity nor a node label).
    pub fn on_node<'a>(&'a self, node: &str) -> impl Iterator<Item = (&'a str, &'a StoredPv)> {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|name| Some((&**name, self.by_name.get(name)?)))
    }

    /// Every node some PV is on.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.by_node.keys().map(|n| &**n)
    }

    /// The PVs labelled with `pool`.
    pub fn of_pool<'a>(&'a self, pool: &str) -> impl Iterator<Item = (&'a str, &'a StoredPv)> {
        self.by_pool
            .get(pool)
            .into_iter()
            .flatten()
            .filter_map(|name| Some((&**name, self.by_name.get(name)?)))
    }

    /// How many PVs are stored.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_name.len()
    }
}

fn unindex(index: &mut Index, key: &str, name: &str) {
    if let Some(names) = index.get_mut(key) {
        names.remove(name);
        if names.is_empty() {
            index.remove(key);
        }
    }
}

/// The store as the plan reads it, node by node (each call reads the store as it is then).
pub struct PvView<'a>(pub &'a RwLock<PvStore>);

impl PvView<'_> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, PvStore> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl LocalPvs for PvView<'_> {
    fn on_node(&self, node: &str) -> Vec<Arc<PersistentVolume>> {
        let store = self.read();
        let pvs = store.on_node(node);
        pvs.map(|(name, pv)| Arc::new(pv.to_pv(name))).collect()
    }

    fn nodes(&self) -> Vec<String> {
        self.read().nodes().map(String::from).collect()
    }

    fn of_pool(&self, pool: &str) -> Vec<Arc<PersistentVolume>> {
        let store = self.read();
        let pvs = store.of_pool(pool);
        pvs.map(|(name, pv)| Arc::new(pv.to_pv(name))).collect()
    }

    fn get(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.read().get(name).map(|pv| Arc::new(pv.to_pv(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(yaml: &str) -> PersistentVolume {
        serde_yaml::from_str(yaml).expect("pv")
    }

    #[test]
    fn a_stored_pv_reads_back_as_the_plan_sees_it() {
        let original = pv(r#"
metadata:
  name: fast-n1-vol0-1234
  uid: u1
  resourceVersion: "42"
  labels: {volpool.io/pool: fast, volpool.io/node: n1, volpool.io/volume-id: "uuid-1", team: a}
  annotations: {volpool.io/volume-id: "uuid:1", volpool.io/node-uid: nu, pv.kubernetes.io/bound-by-controller: "yes"}
  managedFields: [{manager: volpool-controller, operation: Apply}]
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: fast-disks
  persistentVolumeReclaimPolicy: Delete
  volumeMode: Filesystem
  local: {path: /mnt/disks/vol0}
  nodeAffinity: {required: {nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [n1]}]}]}}
  claimRef: {namespace: ns, name: c, uid: cu}
status: {phase: Bound, message: hello}
"#);
        let mut store = PvStore::default();
        assert_eq!(store.apply(&original), vec![Arc::from("n1")]);
        let back = store
            .get("fast-n1-vol0-1234")
            .expect("stored")
            .to_pv("fast-n1-vol0-1234");
        let mut want = original.clone();
        want.metadata.managed_fields = None;
        want.metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .remove("pv.kubernetes.io/bound-by-controller");
        want.status = Some(PersistentVolumeStatus {
            phase: Some("Bound".into()),
            ..Default::default()
        });
        assert_eq!(back, want);
        assert_eq!(store.on_node("n1").count(), 1);
        assert_eq!(store.remove("fast-n1-vol0-1234"), vec![Arc::from("n1")]);
        assert_eq!(store.nodes().count(), 0);
    }

    #[test]
    fn a_local_pv_is_on_the_node_of_its_affinity_whatever_its_label_says() {
        let mut store = PvStore::default();
        let affinity = "nodeAffinity: {required: {nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [n1]}]}]}}";
        for label in ["n1", "n2", ""] {
            let touched = store.apply(&pv(&format!(
                "metadata: {{name: a, labels: {{volpool.io/node: '{label}'}}}}\nspec: {{local: {{path: /mnt/disks/a}}, {affinity}}}"
            )));
            assert_eq!(touched, [Arc::from("n1"), Arc::from("n1")][..touched.len()]);
            assert_eq!(store.on_node("n1").count(), 1, "label {label:?}");
            assert_eq!(store.nodes().collect::<Vec<_>>(), ["n1"]);
        }
    }

    #[test]
    fn a_relist_forgets_what_it_does_not_bring() {
        let mut store = PvStore::default();
        for name in ["a", "b"] {
            store.apply(&pv(&format!(
                "metadata: {{name: {name}, labels: {{volpool.io/node: n}}}}"
            )));
        }
        store.relist();
        store.apply(&pv("metadata: {name: b, labels: {volpool.io/node: n}}"));
        store.relisted();
        assert!(store.get("a").is_none());
        assert!(store.get("b").is_some());
        assert_eq!(store.len(), 1);
    }
}
