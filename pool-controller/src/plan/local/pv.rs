//! One local PV as plain fields, and the conversion both ways.
//!
//! ```text
//!  VolumeReport + VolumePool ──► LocalPv ──► PersistentVolume (what the controller applies)
//!  PersistentVolume (observed) ──► LocalPv (what the controller once applied)
//! ```
//!
//! Comparing two `LocalPv`s tells whether a write is needed; every apply carries the whole
//! object, because server-side apply drops the fields a manager stops sending.
//!
//! A PV's identity is what nobody can edit without changing what it mounts: the node of its
//! `nodeAffinity` and its `local.path` (both immutable in the API), and the volume identity
//! annotation. The `volpool.io/node` label is only a copy for `kubectl -l`, which the
//! controller restores when someone edits it.

use k8s_openapi::api::core::v1::{LocalVolumeSource, PersistentVolume};
use volpool_api::{
    LABEL_HEALTH, LABEL_HOSTNAME, LABEL_MANAGED_BY, LABEL_NODE, MANAGED_BY, VolumeMode,
};

use crate::plan::pv::{ANNOTATION_VOLUME_ID, Base, Observed, PoolFields, affinity_in};

/// PV annotation: UID of the Node the volume was found on, so a re-created node with the same
/// name inherits the old node's PVs only for the disks its agent reports again.
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
    /// What the PV takes from its pool.
    pub fields: PoolFields,
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
        let mut pv = Base {
            name: &self.name,
            pool: &self.pool,
            volume_id: &self.volume_id,
            path: &self.path,
            capacity_bytes: self.capacity_bytes,
            fields: &self.fields,
            released_at: self.released_at.as_deref(),
        }
        .to_pv();
        let labels = pv.metadata.labels.get_or_insert_default();
        labels.insert(LABEL_NODE.into(), self.node.clone());
        if let Some(health) = self.health {
            labels.insert(LABEL_HEALTH.into(), health.label().into());
        }
        let annotations = pv.metadata.annotations.get_or_insert_default();
        annotations.insert(ANNOTATION_NODE_UID.into(), self.node_uid.clone());
        if self.cleanup_failed {
            annotations.insert(ANNOTATION_CLEANUP_FAILED.into(), "true".into());
        }
        let spec = pv.spec.get_or_insert_default();
        spec.volume_mode = Some(
            match self.volume_mode {
                VolumeMode::Filesystem => "Filesystem",
                VolumeMode::Block => "Block",
            }
            .into(),
        );
        spec.local = Some(LocalVolumeSource {
            path: self.path.clone(),
            fs_type: None,
        });
        spec.node_affinity = Some(affinity_in(LABEL_HOSTNAME, self.node.clone()));
        pv
    }

    /// Read back what the controller wrote into an observed PV; `None` when it is not a local
    /// PV of volpool's making or its identity cannot be read ([`unreadable`] says why): such
    /// a PV is never touched. The node is the one of its `nodeAffinity`, whatever its
    /// `volpool.io/node` label says.
    pub fn from_pv(pv: &PersistentVolume, extra_label_keys: &[&str]) -> Option<LocalPv> {
        let seen = Observed::read(pv, extra_label_keys)?;
        let annotations = seen.annotations?;
        let local = seen.spec.local.as_ref()?;
        Some(LocalPv {
            node: affinity_node(seen.spec)?.to_string(),
            node_uid: annotations
                .get(ANNOTATION_NODE_UID)
                .cloned()
                .unwrap_or_default(),
            volume_id: annotations.get(ANNOTATION_VOLUME_ID)?.clone(),
            path: local.path.clone(),
            volume_mode: match seen.spec.volume_mode.as_deref() {
                Some("Block") => VolumeMode::Block,
                _ => VolumeMode::Filesystem,
            },
            health: seen
                .labels
                .get(LABEL_HEALTH)
                .and_then(|v| Health::from_label(v)),
            cleanup_failed: annotations.contains_key(ANNOTATION_CLEANUP_FAILED),
            name: seen.name,
            pool: seen.pool,
            capacity_bytes: seen.capacity_bytes,
            fields: seen.fields,
            released_at: seen.released_at,
        })
    }
}

/// The node a local PV is pinned to (immutable in the API, unlike a label); shared with the
/// agent, which checks it before a scrub.
pub use volpool_api::pv::affinity_node;

/// The node a local PV is on: its node affinity's, else (a PV that lost it) its label's.
pub fn node_of(pv: &PersistentVolume) -> Option<&str> {
    let affinity = pv.spec.as_ref().and_then(affinity_node);
    let label = || {
        pv.metadata
            .labels
            .as_ref()?
            .get(LABEL_NODE)
            .map(String::as_str)
    };
    affinity.or_else(label)
}

/// Reason of the problem about a PV whose identity cannot be read.
pub const UNREADABLE: &str = "UnreadablePV";

/// Why a local PV of volpool's making cannot be identified, and what to fix; `None` when it
/// can be, or is not volpool's local PV.
pub fn unreadable(pv: &PersistentVolume) -> Option<String> {
    let labels = pv.metadata.labels.as_ref()?;
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    let spec = pv.spec.as_ref()?;
    let path = &spec.local.as_ref()?.path;
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let annotations = pv.metadata.annotations.as_ref();
    let id = annotations.and_then(|a| a.get(ANNOTATION_VOLUME_ID));
    let what = match (affinity_node(spec), id) {
        (None, _) => {
            format!("has no node affinity {LABEL_HOSTNAME} In [<node>], so its node is unknown")
        }
        (Some(_), None) => format!(
            "has no annotation {ANNOTATION_VOLUME_ID}, so the disk it was made for is unknown: set it back to the volumeID its node reports at {path}"
        ),
        (Some(_), Some(_)) => return None,
    };
    Some(format!(
        "PV {name} (local path {path}) {what}; the controller leaves it alone and makes no other PV for that path; if it is Available, deleting it makes the controller offer a fresh one"
    ))
}
