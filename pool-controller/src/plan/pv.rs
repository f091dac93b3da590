//! What every volpool PV, local or NFS, shares: the spec fields taken from the pool, how they
//! are read back from an observed PV, the release bookkeeping, and the phase the plan sees.
//!
//! ```text
//!  VolumePool ──► pool_spec ──► PersistentVolumeSpec (capacity, class, modes, policy, options)
//!  PersistentVolume (observed) ──► read_* / phase ──► what the controller once applied
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume,
    PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use volpool_api::{AccessMode, ReclaimPolicy};

/// PV annotation: the full volume identity (the label may be a hash of it).
pub const ANNOTATION_VOLUME_ID: &str = "volpool.io/volume-id";
/// PV annotation: when the controller first saw the PV Released (RFC 3339).
pub const ANNOTATION_RELEASED_AT: &str = "volpool.io/released-at";

fn access_mode_name(mode: AccessMode) -> &'static str {
    match mode {
        AccessMode::ReadWriteOnce => "ReadWriteOnce",
        AccessMode::ReadOnlyMany => "ReadOnlyMany",
        AccessMode::ReadWriteMany => "ReadWriteMany",
    }
}

fn access_mode_from(name: &str) -> Option<AccessMode> {
    [
        AccessMode::ReadWriteOnce,
        AccessMode::ReadOnlyMany,
        AccessMode::ReadWriteMany,
    ]
    .into_iter()
    .find(|m| access_mode_name(*m) == name)
}

/// The spec fields every volpool PV, local or NFS, takes from its pool.
pub fn pool_spec(
    capacity_bytes: u64,
    storage_class: &str,
    access_modes: &[AccessMode],
    reclaim_policy: ReclaimPolicy,
    mount_options: &[String],
) -> PersistentVolumeSpec {
    PersistentVolumeSpec {
        capacity: Some(BTreeMap::from([(
            "storage".to_string(),
            Quantity(capacity_bytes.to_string()),
        )])),
        access_modes: Some(
            access_modes
                .iter()
                .map(|m| access_mode_name(*m).to_string())
                .collect(),
        ),
        storage_class_name: Some(storage_class.to_string()),
        persistent_volume_reclaim_policy: Some(
            match reclaim_policy {
                ReclaimPolicy::Delete => "Delete",
                ReclaimPolicy::Retain => "Retain",
            }
            .into(),
        ),
        mount_options: (!mount_options.is_empty()).then(|| mount_options.to_vec()),
        ..Default::default()
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
pub fn read_access_modes(spec: &PersistentVolumeSpec) -> Vec<AccessMode> {
    spec.access_modes
        .iter()
        .flatten()
        .filter_map(|m| access_mode_from(m))
        .collect()
}

/// The reclaim policy of an observed PV.
pub fn read_reclaim_policy(spec: &PersistentVolumeSpec) -> ReclaimPolicy {
    match spec.persistent_volume_reclaim_policy.as_deref() {
        Some("Retain") => ReclaimPolicy::Retain,
        _ => ReclaimPolicy::Delete,
    }
}

/// The pool's extra labels found on an observed PV.
pub fn read_extra_labels(
    labels: &BTreeMap<String, String>,
    keys: &[&str],
) -> BTreeMap<String, String> {
    keys.iter()
        .filter_map(|k| labels.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

/// When a Released PV was first seen Released: its annotation, or `now` on the first look.
pub fn released_since(annotation: Option<&str>, now: Timestamp) -> Timestamp {
    annotation
        .and_then(|t| t.parse::<Timestamp>().ok())
        .unwrap_or(now)
}

/// Phase of a PV as the controller needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Free to bind: no claim, phase Available or not yet set.
    Available,
    /// Bound, or being bound (a claimRef is set).
    Bound,
    /// The claim is gone (Released, or Failed with a claimRef).
    Released,
}

/// The phase of an observed PV. A PV with a claimRef is never `Available`, whatever its
/// status says, so a PV about to be bound is never deleted.
pub fn phase(pv: &PersistentVolume) -> Phase {
    let claimed = pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_some());
    match pv.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Released" | "Failed") if claimed => Phase::Released,
        _ if claimed => Phase::Bound,
        Some("Bound") => Phase::Bound,
        _ => Phase::Available,
    }
}
