//! The Events a plan publishes, as plain data. An Event about a PV in use is also published
//! on its claim, so `kubectl describe pvc` shows what happened to the volume behind it.
//!
//! ```text
//!  PV (+ its claimRef) + reason, note ──► about_pv ──► [Notice on the PV, Notice on the claim]
//! ```

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume};
pub use volpool_api::events::Notice;

/// The same Event on the PV and, when it has one, on its claim.
pub fn about_pv(
    pv: &PersistentVolume,
    warning: bool,
    reason: &str,
    action: &str,
    note: &str,
) -> Vec<Notice> {
    let mut regarding = vec![ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolume".into()),
        name: pv.metadata.name.clone(),
        uid: pv.metadata.uid.clone(),
        ..Default::default()
    }];
    if let Some(claim) = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()) {
        regarding.push(claim);
    }
    regarding
        .into_iter()
        .map(|regarding| Notice {
            regarding,
            warning,
            reason: reason.into(),
            action: action.into(),
            note: note.into(),
        })
        .collect()
}
