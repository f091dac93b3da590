//! One local PV as plain fields, and the conversion both ways.
//!
//! ```text
//!  VolumeReport + VolumePool ──► LocalPv ──► PersistentVolume (what the controller applies)
//!  PersistentVolume (observed) ──► LocalPv (what the controller once applied)
//! ```
//!
//! Comparing two `LocalPv`s tells whether a write is needed; every apply carries the whole
//! object, because server-side apply drops the fields a manager stops sending.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalVolumeSource, PersistentVolume, PersistentVolumeSpec};
use kube::api::ObjectMeta;
use volpool_api::units::parse_bytes;
use volpool_api::{
    ANNOTATION_PATH, ANNOTATION_PROVISIONED_BY, AccessMode, LABEL_HEALTH, LABEL_HOSTNAME,
    LABEL_MANAGED_BY, LABEL_NODE, LABEL_POOL, LABEL_VOLUME_ID, MANAGED_BY, PROVISIONER,
    ReclaimPolicy, VolumeMode, volume_id_label,
};

use crate::plan::pv::{
    ANNOTATION_RELEASED_AT, ANNOTATION_VOLUME_ID, affinity_in, pool_spec, read_access_modes,
    read_extra_labels, read_reclaim_policy,
};

/// PV annotation: UID of the Node the volume was found on, so a re-created node with the same
/// name never inherits the old node's PVs.
pub const ANNOTATION_NODE_UID: &str = "volpool.io/node-uid";
/// PV annotation: the agent reported the scrub as failed or refused; the PV stays Released.
pub const ANNOTATION_CLEANUP_FAILED: &str = "volpool.io/cleanup-failed";

/// Why a PV that still exists no longer has a healthy volume behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Health {
    /// The volume is gone from its node's report.
    Missing,
    /// Another disk (another identity) is now at the volume's path.
    Replaced,
    /// The node is gone, or was re-created with another UID.
    NodeGone,
}

impl Health {
    /// Value of the `volpool.io/health` label.
    pub fn label(self) -> &'static str {
        match self {
            Health::Missing => "missing",
            Health::Replaced => "replaced",
            Health::NodeGone => "node-gone",
        }
    }

    /// Reason of the Events about it.
    pub fn reason(self) -> &'static str {
        match self {
            Health::Missing => "VolumeMissing",
            Health::Replaced => "VolumeReplaced",
            Health::NodeGone => "NodeGone",
        }
    }

    /// What happened to the volume behind `pv`, for humans.
    pub fn why(self, pv: &LocalPv) -> String {
        match self {
            Health::NodeGone => format!("node {} is gone", pv.node),
            Health::Replaced => format!("another disk is now at {}:{}", pv.node, pv.path),
            Health::Missing => format!(
                "volume {} is gone from {}:{}",
                pv.volume_id, pv.node, pv.path
            ),
        }
    }

    fn from_label(value: &str) -> Option<Health> {
        [Health::Missing, Health::Replaced, Health::NodeGone]
            .into_iter()
            .find(|h| h.label() == value)
    }
}

/// Everything the controller writes into one local PV.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalPv {
    /// PV name, from `volpool_api::local_pv_name`.
    pub name: String,
    /// The pool.
    pub pool: String,
    /// The node the volume is on.
    pub node: String,
    /// UID of that node when the PV was made.
    pub node_uid: String,
    /// The volume's identity.
    pub volume_id: String,
    /// Host path of the volume.
    pub path: String,
    /// Capacity written into the PV.
    pub capacity_bytes: u64,
    /// Filesystem or Block.
    pub volume_mode: VolumeMode,
    /// From the pool.
    pub storage_class: String,
    /// From the pool.
    pub access_modes: Vec<AccessMode>,
    /// From the pool.
    pub reclaim_policy: ReclaimPolicy,
    /// From the pool.
    pub mount_options: Vec<String>,
    /// From the pool's `labels`.
    pub extra_labels: BTreeMap<String, String>,
    /// Set when the volume behind a PV in use is gone.
    pub health: Option<Health>,
    /// When the PV was first seen Released.
    pub released_at: Option<String>,
    /// Whether the agent reported a failed or refused scrub.
    pub cleanup_failed: bool,
}

impl LocalPv {
    /// The PersistentVolume to server-side apply.
    pub fn to_pv(&self) -> PersistentVolume {
        let mut labels = self.extra_labels.clone();
        labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
        labels.insert(LABEL_POOL.into(), self.pool.clone());
        labels.insert(LABEL_NODE.into(), self.node.clone());
        labels.insert(LABEL_VOLUME_ID.into(), volume_id_label(&self.volume_id));
        if let Some(health) = self.health {
            labels.insert(LABEL_HEALTH.into(), health.label().into());
        }
        let mut annotations = BTreeMap::from([
            (
                ANNOTATION_PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            ),
            (ANNOTATION_PATH.to_string(), self.path.clone()),
            (ANNOTATION_VOLUME_ID.to_string(), self.volume_id.clone()),
            (ANNOTATION_NODE_UID.to_string(), self.node_uid.clone()),
        ]);
        if let Some(at) = &self.released_at {
            annotations.insert(ANNOTATION_RELEASED_AT.into(), at.clone());
        }
        if self.cleanup_failed {
            annotations.insert(ANNOTATION_CLEANUP_FAILED.into(), "true".into());
        }
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                volume_mode: Some(
                    match self.volume_mode {
                        VolumeMode::Filesystem => "Filesystem",
                        VolumeMode::Block => "Block",
                    }
                    .into(),
                ),
                local: Some(LocalVolumeSource {
                    path: self.path.clone(),
                    fs_type: None,
                }),
                node_affinity: Some(affinity_in(LABEL_HOSTNAME, self.node.clone())),
                ..pool_spec(
                    self.capacity_bytes,
                    &self.storage_class,
                    &self.access_modes,
                    self.reclaim_policy,
                    &self.mount_options,
                )
            }),
            status: None,
        }
    }

    /// Read back what the controller wrote into an observed PV; `None` when it is not a local
    /// PV of volpool's making (such a PV is never touched).
    pub fn from_pv(pv: &PersistentVolume, extra_label_keys: &[&str]) -> Option<LocalPv> {
        let meta = &pv.metadata;
        let labels = meta.labels.as_ref()?;
        let annotations = meta.annotations.as_ref()?;
        if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY) {
            return None;
        }
        let spec = pv.spec.as_ref()?;
        let local = spec.local.as_ref()?;
        let capacity = spec.capacity.as_ref()?.get("storage")?;
        Some(LocalPv {
            name: meta.name.clone()?,
            pool: labels.get(LABEL_POOL)?.clone(),
            node: labels.get(LABEL_NODE)?.clone(),
            node_uid: annotations
                .get(ANNOTATION_NODE_UID)
                .cloned()
                .unwrap_or_default(),
            volume_id: annotations.get(ANNOTATION_VOLUME_ID)?.clone(),
            path: local.path.clone(),
            capacity_bytes: parse_bytes(&capacity.0).ok()?,
            volume_mode: match spec.volume_mode.as_deref() {
                Some("Block") => VolumeMode::Block,
                _ => VolumeMode::Filesystem,
            },
            storage_class: spec.storage_class_name.clone().unwrap_or_default(),
            access_modes: read_access_modes(spec),
            reclaim_policy: read_reclaim_policy(spec),
            mount_options: spec.mount_options.clone().unwrap_or_default(),
            extra_labels: read_extra_labels(labels, extra_label_keys),
            health: labels.get(LABEL_HEALTH).and_then(|v| Health::from_label(v)),
            released_at: annotations.get(ANNOTATION_RELEASED_AT).cloned(),
            cleanup_failed: annotations.contains_key(ANNOTATION_CLEANUP_FAILED),
        })
    }
}
