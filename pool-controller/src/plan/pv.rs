//! What every volpool PV, local or NFS, shares: the spec fields taken from the pool, how they
//! are read back from an observed PV, the release bookkeeping, and the phase the plan sees.
//!
//! ```text
//!  VolumePool ──► pool_spec ──► PersistentVolumeSpec (capacity, class, modes, policy, options)
//!  PersistentVolume (observed) ──► read_* / phase ──► what the controller once applied
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolume,
    PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
pub use volpool_api::ANNOTATION_VOLUME_ID;
pub use volpool_api::pv::{Phase, phase};
use volpool_api::units::parse_bytes;
use volpool_api::{
    ANNOTATION_PATH, ANNOTATION_PROVISIONED_BY, AccessMode, LABEL_MANAGED_BY, LABEL_POOL,
    LABEL_VOLUME_ID, MANAGED_BY, PROVISIONER, ReclaimPolicy, VolumePool, volume_id_label,
};

/// PV annotation: when the controller first saw the PV Released (RFC 3339).
pub const ANNOTATION_RELEASED_AT: &str = "volpool.io/released-at";

/// The Kubernetes name of an access mode.
pub fn access_mode_name(mode: AccessMode) -> &'static str {
    match mode {
        AccessMode::ReadWriteOnce => "ReadWriteOnce",
        AccessMode::ReadOnlyMany => "ReadOnlyMany",
        AccessMode::ReadWriteMany => "ReadWriteMany",
    }
}

/// The access mode of a Kubernetes name (`None` for an unknown one).
pub fn access_mode_from(name: &str) -> Option<AccessMode> {
    [
        AccessMode::ReadWriteOnce,
        AccessMode::ReadOnlyMany,
        AccessMode::ReadWriteMany,
    ]
    .into_iter()
    .find(|m| access_mode_name(*m) == name)
}

/// What every volpool PV, local or NFS, takes from its pool.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolFields {
    /// `storageClassName`.
    pub storage_class: String,
    /// `accessModes`.
    pub access_modes: Vec<AccessMode>,
    /// `persistentVolumeReclaimPolicy`.
    pub reclaim_policy: ReclaimPolicy,
    /// `mountOptions`.
    pub mount_options: Vec<String>,
    /// The pool's `labels`.
    pub extra_labels: BTreeMap<String, String>,
}

impl PoolFields {
    /// The fields a pool asks for now.
    pub fn of(pool: &VolumePool) -> PoolFields {
        PoolFields {
            storage_class: pool.spec.storage_class_name.clone(),
            access_modes: pool.effective_access_modes(),
            reclaim_policy: pool.spec.reclaim_policy,
            mount_options: pool.spec.mount_options.clone(),
            extra_labels: pool.spec.labels.clone(),
        }
    }

    fn spec(&self, capacity_bytes: u64) -> PersistentVolumeSpec {
        PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".to_string(),
                Quantity(capacity_bytes.to_string()),
            )])),
            access_modes: Some(
                self.access_modes
                    .iter()
                    .map(|m| access_mode_name(*m).to_string())
                    .collect(),
            ),
            storage_class_name: Some(self.storage_class.clone()),
            persistent_volume_reclaim_policy: Some(
                match self.reclaim_policy {
                    ReclaimPolicy::Delete => "Delete",
                    ReclaimPolicy::Retain => "Retain",
                }
                .into(),
            ),
            mount_options: (!self.mount_options.is_empty()).then(|| self.mount_options.clone()),
            ..Default::default()
        }
    }
}

/// The parts of a PV that every volpool PV has.
pub struct Base<'a> {
    /// PV name.
    pub name: &'a str,
    /// The pool.
    pub pool: &'a str,
    /// The volume's identity.
    pub volume_id: &'a str,
    /// Path of the volume (on the node, or on the server).
    pub path: &'a str,
    /// Capacity written into the PV.
    pub capacity_bytes: u64,
    /// From the pool.
    pub fields: &'a PoolFields,
    /// When the PV was first seen Released.
    pub released_at: Option<&'a str>,
}

impl Base<'_> {
    /// The PV with volpool's labels and annotations and the pool's spec fields; the caller
    /// adds its kind's volume source, affinity, labels and annotations.
    pub fn to_pv(&self) -> PersistentVolume {
        let mut labels = self.fields.extra_labels.clone();
        labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
        labels.insert(LABEL_POOL.into(), self.pool.into());
        labels.insert(LABEL_VOLUME_ID.into(), volume_id_label(self.volume_id));
        let mut annotations = BTreeMap::from([
            (
                ANNOTATION_PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            ),
            (ANNOTATION_PATH.to_string(), self.path.into()),
            (ANNOTATION_VOLUME_ID.to_string(), self.volume_id.into()),
        ]);
        if let Some(at) = self.released_at {
            annotations.insert(ANNOTATION_RELEASED_AT.into(), at.into());
        }
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(self.name.into()),
                labels: Some(labels),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(self.fields.spec(self.capacity_bytes)),
            status: None,
        }
    }
}

/// What every volpool PV holds, read back from an observed one.
pub struct Observed<'a> {
    /// PV name.
    pub name: String,
    /// The pool label.
    pub pool: String,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Its annotations, if any.
    pub annotations: Option<&'a BTreeMap<String, String>>,
    /// Its spec.
    pub spec: &'a PersistentVolumeSpec,
    /// Its capacity.
    pub capacity_bytes: u64,
    /// What it took from its pool (of the pool's labels, those in `extra_label_keys`).
    pub fields: PoolFields,
    /// When it was first seen Released.
    pub released_at: Option<String>,
}

impl Observed<'_> {
    /// Read an observed PV; `None` when it is not one of volpool's making (never touched).
    pub fn read<'a>(pv: &'a PersistentVolume, extra_label_keys: &[&str]) -> Option<Observed<'a>> {
        let meta = &pv.metadata;
        let labels = meta.labels.as_ref()?;
        if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY) {
            return None;
        }
        let spec = pv.spec.as_ref()?;
        let capacity = spec.capacity.as_ref()?.get("storage")?;
        let annotations = meta.annotations.as_ref();
        Some(Observed {
            name: meta.name.clone()?,
            pool: labels.get(LABEL_POOL)?.clone(),
            labels,
            annotations,
            spec,
            capacity_bytes: parse_bytes(&capacity.0).ok()?,
            fields: PoolFields {
                storage_class: spec.storage_class_name.clone().unwrap_or_default(),
                access_modes: read_access_modes(spec),
                reclaim_policy: match spec.persistent_volume_reclaim_policy.as_deref() {
                    Some("Retain") => ReclaimPolicy::Retain,
                    _ => ReclaimPolicy::Delete,
                },
                mount_options: spec.mount_options.clone().unwrap_or_default(),
                extra_labels: extra_label_keys
                    .iter()
                    .filter_map(|k| labels.get(*k).map(|v| (k.to_string(), v.clone())))
                    .collect(),
            },
            released_at: annotations
                .and_then(|a| a.get(ANNOTATION_RELEASED_AT))
                .cloned(),
        })
    }
}

/// A required node affinity: `<key> In [<value>]`.
pub fn affinity_in(key: &str, value: String) -> VolumeNodeAffinity {
    VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: key.into(),
                    operator: "In".into(),
                    values: Some(vec![value]),
                }]),
                ..Default::default()
            }],
        }),
    }
}

/// The access modes of an observed PV (unknown ones skipped).
fn read_access_modes(spec: &PersistentVolumeSpec) -> Vec<AccessMode> {
    spec.access_modes
        .iter()
        .flatten()
        .filter_map(|m| access_mode_from(m))
        .collect()
}

/// When a Released PV was first seen Released: its annotation, or `now` on the first look.
pub fn released_since(annotation: Option<&str>, now: Timestamp) -> Timestamp {
    annotation
        .and_then(|t| t.parse::<Timestamp>().ok())
        .unwrap_or(now)
}

/// A reference to claim `namespace/name` with `uid`, for Events and a PV's `claimRef`.
pub fn claim_reference(namespace: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}
