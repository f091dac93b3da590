//! One NFS PV as plain fields, and the conversion both ways (the NFS twin of `local/pv.rs`).
//!
//! ```text
//!  VolumePool (spec.nfs) + directory ──► NfsPv ──► PersistentVolume {nfs: server, path/dir}
//!  PersistentVolume (observed) ──► NfsPv (what the controller once applied)
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NFSVolumeSource, PersistentVolume, PersistentVolumeSpec};
use kube::api::ObjectMeta;
use volpool_api::units::parse_bytes;
use volpool_api::{
    ANNOTATION_PATH, ANNOTATION_PROVISIONED_BY, AccessMode, LABEL_HEALTH, LABEL_MANAGED_BY,
    LABEL_NFS_CLIENT, LABEL_POOL, LABEL_VOLUME_ID, MANAGED_BY, NFS_CLIENT_READY, PROVISIONER,
    ReclaimPolicy, volume_id_label,
};

use crate::plan::pv::{
    ANNOTATION_RELEASED_AT, ANNOTATION_VOLUME_ID, affinity_in, pool_spec, read_access_modes,
    read_extra_labels, read_reclaim_policy,
};

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
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                volume_mode: Some("Filesystem".into()),
                nfs: Some(NFSVolumeSource {
                    server: self.server.clone(),
                    path: self.path(),
                    read_only: None,
                }),
                node_affinity: self
                    .affinity
                    .then(|| affinity_in(LABEL_NFS_CLIENT, NFS_CLIENT_READY.into())),
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
            access_modes: read_access_modes(spec),
            reclaim_policy: read_reclaim_policy(spec),
            mount_options: spec.mount_options.clone().unwrap_or_default(),
            extra_labels: read_extra_labels(labels, extra_label_keys),
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
