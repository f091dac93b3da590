//! One NFS PV as plain fields, and the conversion both ways (the NFS twin of `local/pv.rs`).
//!
//! ```text
//!  VolumePool (spec.nfs) + directory ──► NfsPv ──► PersistentVolume {nfs: server, path/dir}
//!  PersistentVolume (observed) ──► NfsPv (what the controller once applied)
//! ```

use k8s_openapi::api::core::v1::{NFSVolumeSource, ObjectReference, PersistentVolume};
use volpool_api::{ANNOTATION_PRE_BOUND, LABEL_HEALTH, LABEL_NFS_CLIENT, NFS_CLIENT_READY};

use crate::plan::pv::{Base, Observed, PoolFields, affinity_in, claim_reference};

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
    /// What the PV takes from its pool.
    pub fields: PoolFields,
    /// nodeAffinity `volpool.io/nfs-client In [ready]`.
    pub affinity: bool,
    /// The directory of a PV in use is gone.
    pub missing: bool,
    /// When the PV was first seen Released.
    pub released_at: Option<String>,
    /// The claim the controller made the PV for (`spec.claimRef`, annotated
    /// `volpool.io/pre-bound`); `None` for a PV made ahead of claims.
    pub claim: Option<ClaimRef>,
}

/// The claim a PV is pre-bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
}

impl ClaimRef {
    /// A reference to the claim, for the PV's `claimRef` and Events.
    pub fn reference(&self) -> ObjectReference {
        claim_reference(&self.namespace, &self.name, &self.uid)
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
        let (path, volume_id) = (self.path(), self.volume_id());
        let mut pv = Base {
            name: &self.name,
            pool: &self.pool,
            volume_id: &volume_id,
            path: &path,
            capacity_bytes: self.capacity_bytes,
            fields: &self.fields,
            released_at: self.released_at.as_deref(),
        }
        .to_pv();
        if self.missing {
            let labels = pv.metadata.labels.get_or_insert_default();
            labels.insert(LABEL_HEALTH.into(), HEALTH_MISSING.into());
        }
        let spec = pv.spec.get_or_insert_default();
        if let Some(claim) = &self.claim {
            spec.claim_ref = Some(claim.reference());
            let annotations = pv.metadata.annotations.get_or_insert_default();
            let at = format!("{}/{}", claim.namespace, claim.name);
            annotations.insert(ANNOTATION_PRE_BOUND.into(), at);
        }
        spec.volume_mode = Some("Filesystem".into());
        spec.nfs = Some(NFSVolumeSource {
            server: self.server.clone(),
            path,
            read_only: None,
        });
        spec.node_affinity = self
            .affinity
            .then(|| affinity_in(LABEL_NFS_CLIENT, NFS_CLIENT_READY.into()));
        pv
    }

    /// Read back what the controller wrote into an observed PV; `None` when it is not an NFS
    /// PV of volpool's making.
    pub fn from_pv(pv: &PersistentVolume, extra_label_keys: &[&str]) -> Option<NfsPv> {
        let seen = Observed::read(pv, extra_label_keys)?;
        let nfs = seen.spec.nfs.as_ref()?;
        let (export, dir) = nfs.path.rsplit_once('/')?;
        let affinity = seen
            .spec
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
        // NB: only a claimRef the controller wrote is its own; the binder's is left to it.
        let claim = seen
            .annotations
            .filter(|a| a.contains_key(ANNOTATION_PRE_BOUND))
            .and(seen.spec.claim_ref.as_ref())
            .map(|c| ClaimRef {
                namespace: c.namespace.clone().unwrap_or_default(),
                name: c.name.clone().unwrap_or_default(),
                uid: c.uid.clone().unwrap_or_default(),
            });
        Some(NfsPv {
            claim,
            server: nfs.server.clone(),
            export: if export.is_empty() {
                "/".into()
            } else {
                export.into()
            },
            dir: dir.to_string(),
            affinity,
            missing: seen.labels.get(LABEL_HEALTH).map(String::as_str) == Some(HEALTH_MISSING),
            name: seen.name,
            pool: seen.pool,
            capacity_bytes: seen.capacity_bytes,
            fields: seen.fields,
            released_at: seen.released_at,
        })
    }
}
