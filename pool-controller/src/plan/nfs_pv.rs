//! One NFS PV as plain fields, and the conversion both ways (the NFS twin of `pv.rs`).
//!
//! ```text
//!  VolumePool (spec.nfs) + directory ──► NfsPv ──► PersistentVolume {nfs: server, path/dir}
//!  PersistentVolume (observed) ──► NfsPv (what the controller once applied)
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NFSVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume,
    PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use volpool_api::units::parse_bytes;
use volpool_api::{
    ANNOTATION_PATH, ANNOTATION_PROVISIONED_BY, AccessMode, LABEL_HEALTH, LABEL_MANAGED_BY,
    LABEL_NFS_CLIENT, LABEL_POOL, LABEL_VOLUME_ID, MANAGED_BY, NFS_CLIENT_READY, PROVISIONER,
    ReclaimPolicy, volume_id_label,
};

use super::pv::{ANNOTATION_RELEASED_AT, ANNOTATION_VOLUME_ID};

/// Value of `volpool.io/health` on a PV in use whose directory is gone from the export.
pub const HEALTH_MISSING: &str = "missing";

/// Everything the controller writes into one NFS PV.
#[derive(Clone, Debug, PartialEq)]
pub struct NfsPv {
    /// PV name, `<pool>-<dir>`.
    pub name: String,
    /// The pool.
    pub pool: String,
    /// NFS server.
    pub server: String,
    /// The pool's export path (the PV mounts `<export>/<dir>`).
    pub export: String,
    /// The sub-directory the PV owns (`pv-<8 hex>`).
    pub dir: String,
    /// Capacity written into the PV (`volumeSize`).
    pub capacity_bytes: u64,
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
    /// nodeAffinity `volpool.io/nfs-client In [ready]`.
    pub affinity: bool,
    /// The directory of a PV in use is gone.
    pub missing: bool,
    /// When the PV was first seen Released.
    pub released_at: Option<String>,
}

fn access_mode_name(mode: AccessMode) -> &'static str {
    match mode {
        AccessMode::ReadWriteOnce => "ReadWriteOnce",
        AccessMode::ReadOnlyMany => "ReadOnlyMany",
        AccessMode::ReadWriteMany => "ReadWriteMany",
    }
}

impl NfsPv {
    /// Path the PV mounts.
    pub fn path(&self) -> String {
        format!("{}/{}", self.export.trim_end_matches('/'), self.dir)
    }

    /// The volume's identity: `server:path`.
    pub fn volume_id(&self) -> String {
        format!("{}:{}", self.server, self.path())
    }

    /// The PersistentVolume to server-side apply.
    pub fn to_pv(&self) -> PersistentVolume {
        let mut labels = self.extra_labels.clone();
        labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
        labels.insert(LABEL_POOL.into(), self.pool.clone());
        labels.insert(LABEL_VOLUME_ID.into(), volume_id_label(&self.volume_id()));
        if self.missing {
            labels.insert(LABEL_HEALTH.into(), HEALTH_MISSING.into());
        }
        let mut annotations = BTreeMap::from([
            (
                ANNOTATION_PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            ),
            (ANNOTATION_PATH.to_string(), self.path()),
            (ANNOTATION_VOLUME_ID.to_string(), self.volume_id()),
        ]);
        if let Some(at) = &self.released_at {
            annotations.insert(ANNOTATION_RELEASED_AT.into(), at.clone());
        }
        let node_affinity = self.affinity.then(|| VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: LABEL_NFS_CLIENT.into(),
                        operator: "In".into(),
                        values: Some(vec![NFS_CLIENT_READY.into()]),
                    }]),
                    ..Default::default()
                }],
            }),
        });
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                capacity: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(self.capacity_bytes.to_string()),
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
                volume_mode: Some("Filesystem".into()),
                nfs: Some(NFSVolumeSource {
                    server: self.server.clone(),
                    path: self.path(),
                    read_only: None,
                }),
                node_affinity,
                ..Default::default()
            }),
            status: None,
        }
    }

    /// Read back what the controller wrote into an observed PV; `None` when it is not an NFS
    /// PV of volpool's making.
    pub fn from_pv(pv: &PersistentVolume, extra_label_keys: &[&str]) -> Option<NfsPv> {
        let meta = &pv.metadata;
        let labels = meta.labels.as_ref()?;
        if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY) {
            return None;
        }
        let spec = pv.spec.as_ref()?;
        let nfs = spec.nfs.as_ref()?;
        let (export, dir) = nfs.path.rsplit_once('/')?;
        let capacity = spec.capacity.as_ref()?.get("storage")?;
        let affinity = spec
            .node_affinity
            .as_ref()
            .and_then(|a| a.required.as_ref())
            .is_some_and(|r| {
                r.node_selector_terms.iter().any(|t| {
                    t.match_expressions
                        .iter()
                        .flatten()
                        .any(|e| e.key == LABEL_NFS_CLIENT)
                })
            });
        Some(NfsPv {
            name: meta.name.clone()?,
            pool: labels.get(LABEL_POOL)?.clone(),
            server: nfs.server.clone(),
            export: if export.is_empty() {
                "/".into()
            } else {
                export.into()
            },
            dir: dir.to_string(),
            capacity_bytes: parse_bytes(&capacity.0).ok()?,
            storage_class: spec.storage_class_name.clone().unwrap_or_default(),
            access_modes: spec
                .access_modes
                .iter()
                .flatten()
                .filter_map(|m| {
                    [
                        AccessMode::ReadWriteOnce,
                        AccessMode::ReadOnlyMany,
                        AccessMode::ReadWriteMany,
                    ]
                    .into_iter()
                    .find(|a| access_mode_name(*a) == m)
                })
                .collect(),
            reclaim_policy: match spec.persistent_volume_reclaim_policy.as_deref() {
                Some("Retain") => ReclaimPolicy::Retain,
                _ => ReclaimPolicy::Delete,
            },
            mount_options: spec.mount_options.clone().unwrap_or_default(),
            extra_labels: extra_label_keys
                .iter()
                .filter_map(|k| labels.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect(),
            affinity,
            missing: labels.get(LABEL_HEALTH).map(String::as_str) == Some(HEALTH_MISSING),
            released_at: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_RELEASED_AT))
                .cloned(),
        })
    }
}
