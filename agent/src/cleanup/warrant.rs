//! Whether a scrub request is backed by its PersistentVolume. Anyone holding an agent's token
//! can write `spec.cleanups` (the agent publishes there), so a request alone proves nothing:
//! before a scrub the daemon reads the PV the request names, and scrubs only when that PV is
//! volpool's PV of this very volume on this node (its nodeAffinity), Released (by the
//! controller's own rules, `volpool_api::pv`), with the reclaim policy volpool scrubs for.
//!
//! ```text
//!  CleanupRequest ─┐
//!  PV (read just now, or none) ─┼─► check ─► Ok: scrub
//!  node, the volume's entries ──┘          └► Err(why and what to do): Refused, nothing touched
//! ```

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::PersistentVolume;
use volpool_api::pv::{Phase, affinity_node, phase};
use volpool_api::{
    ANNOTATION_VOLUME_ID, CleanupRequest, LABEL_HOSTNAME, LABEL_MANAGED_BY, MANAGED_BY,
};

/// The one reclaim policy under which volpool scrubs a released volume.
pub const SCRUBBED_POLICY: &str = "Delete";

/// Who vouches that the volume may be scrubbed.
#[derive(Clone, Debug)]
pub enum Warrant {
    /// A person on the node (`volpool-agent scrub`): their word, nothing is read.
    Operator,
    /// The PersistentVolume the request names, read from the API just before the scrub
    /// (`None`: there is no such PV), and the node this agent runs for.
    Pv {
        /// This agent's node.
        node: String,
        /// The PV as read.
        pv: Option<Box<PersistentVolume>>,
    },
}

/// `Ok` when `pv` allows scrubbing the volume `request` names, found on `node` at `entries`
/// (host paths of the discovery entries that are this volume). `Err`: why not and what to do,
/// for a Refused result. No I/O.
pub fn check(
    pv: Option<&PersistentVolume>,
    request: &CleanupRequest,
    node: &str,
    entries: &[PathBuf],
) -> Result<(), String> {
    let name = &request.persistent_volume;
    let refuse = |why: String| {
        Err(format!(
            "PersistentVolume {name} {why}; nothing was touched"
        ))
    };
    let Some(pv) = pv else {
        return refuse(
            "does not exist: only the volume of a Released volpool PV is scrubbed (a request \
             outlived its PV, or was not written by the controller)"
                .into(),
        );
    };
    let uid = pv.metadata.uid.as_deref().unwrap_or_default();
    if uid != request.pv_uid {
        return refuse(format!(
            "has UID {uid}, not {} as the request says: it was re-created since; the controller \
             asks again for the current PV once it is Released",
            request.pv_uid
        ));
    }
    let labels = pv.metadata.labels.clone().unwrap_or_default();
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY) {
        return refuse(format!(
            "was not made by volpool (no label {LABEL_MANAGED_BY}={MANAGED_BY}): volpool \
             scrubs only its own volumes"
        ));
    }
    let spec = pv.spec.clone().unwrap_or_default();
    let Some(pv_node) = affinity_node(&spec) else {
        return refuse(format!(
            "is not a local PV on one node (no spec.local, or no nodeAffinity {LABEL_HOSTNAME} \
             In [one node]): volpool scrubs only its local volumes"
        ));
    };
    if pv_node != node {
        return refuse(format!(
            "is on node {pv_node:?} (its nodeAffinity), not this node {node}: only that \
             node's agent may scrub it"
        ));
    }
    let annotations = pv.metadata.annotations.as_ref();
    let pv_volume = annotations
        .and_then(|a| a.get(ANNOTATION_VOLUME_ID))
        .map(String::as_str)
        .unwrap_or("");
    if pv_volume != request.volume_id {
        return refuse(format!(
            "is for volume {pv_volume:?} (annotation {ANNOTATION_VOLUME_ID}), not {} as the \
             request says: the request does not match its PV",
            request.volume_id
        ));
    }
    let path = spec.local.as_ref().map(|l| l.path.as_str()).unwrap_or("");
    if !entries.iter().any(|e| e == Path::new(path)) {
        return refuse(format!(
            "has spec.local.path {path:?}, but volume {} is at {} on this node: the disk \
             moved; check the volume by hand",
            request.volume_id,
            list(entries)
        ));
    }
    let claim = spec.claim_ref.as_ref();
    let claim_name = claim.map_or_else(
        || "none".to_string(),
        |c| {
            format!(
                "{}/{}",
                c.namespace.as_deref().unwrap_or_default(),
                c.name.as_deref().unwrap_or_default()
            )
        },
    );
    match phase(pv) {
        Phase::Released => {}
        other => {
            return refuse(format!(
                "is {other:?} (claim {claim_name}, status {:?}): a volume that is not Released \
                 is never scrubbed. The controller asks only for Released PVs: if it asked, \
                 report a bug; otherwise someone wrote spec.cleanups of NodeVolumes {node} \
                 with another identity (see its managedFields)",
                pv.status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .unwrap_or("unset")
            ));
        }
    }
    let policy = spec
        .persistent_volume_reclaim_policy
        .as_deref()
        .unwrap_or("unset");
    if policy != SCRUBBED_POLICY {
        return refuse(format!(
            "has reclaim policy {policy}: volpool scrubs only volumes whose PV says \
             {SCRUBBED_POLICY}; a retained volume is for a person to empty"
        ));
    }
    let claim_uid = claim.and_then(|c| c.uid.as_deref()).unwrap_or_default();
    if !request.claim_uid.is_empty() && claim_uid != request.claim_uid {
        return refuse(format!(
            "was released by claim {claim_name} (UID {claim_uid}), not by claim UID {} as the \
             request says: it was bound again since; the controller asks afresh after the \
             grace period",
            request.claim_uid
        ));
    }
    Ok(())
}

fn list(entries: &[PathBuf]) -> String {
    entries
        .iter()
        .map(|e| e.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[path = "warrant_tests.rs"]
mod tests;
