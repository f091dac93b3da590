//! What volpool reads from a PersistentVolume, one rule for both programs: the controller asks
//! for a scrub only of a local PV it reads `Released` on a node, and the agent scrubs only a
//! volume whose PV it reads `Released` on its own node, by these same rules.
//!
//! ```text
//!  PersistentVolume {spec.claimRef, status.phase} ──► phase ──► Available | Bound | Released
//!  PersistentVolume {spec.local, spec.nodeAffinity} ──► affinity_node ──► the node it is on
//! ```

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeSpec};

use crate::LABEL_HOSTNAME;

/// Phase of a PV as volpool needs it.
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

/// The node of a local PV: the one value of its one nodeAffinity term, `kubernetes.io/hostname
/// In [<node>]`, as the controller writes it. `None` for any other shape (not a local PV of
/// volpool's making). The affinity, not a label, is where the PV's pods run.
pub fn affinity_node(spec: &PersistentVolumeSpec) -> Option<&str> {
    spec.local.as_ref()?;
    let terms = &spec
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let [term] = terms.as_slice() else {
        return None;
    };
    let [only] = term.match_expressions.as_deref()? else {
        return None;
    };
    match only.values.as_deref()? {
        [node] if only.key == LABEL_HOSTNAME && only.operator == "In" => Some(node),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ObjectReference, PersistentVolumeSpec, PersistentVolumeStatus,
    };

    fn pv(status: Option<&str>, claimed: bool) -> PersistentVolume {
        PersistentVolume {
            spec: Some(PersistentVolumeSpec {
                claim_ref: claimed.then(ObjectReference::default),
                ..Default::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: status.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_claimed_pv_whose_claim_is_gone_is_released() {
        assert_eq!(phase(&pv(Some("Released"), true)), Phase::Released);
        assert_eq!(phase(&pv(Some("Failed"), true)), Phase::Released);
        assert_eq!(phase(&pv(Some("Released"), false)), Phase::Available);
        assert_eq!(phase(&pv(Some("Bound"), true)), Phase::Bound);
        assert_eq!(
            phase(&pv(Some("Available"), true)),
            Phase::Bound,
            "being bound"
        );
        assert_eq!(phase(&pv(None, true)), Phase::Bound);
        assert_eq!(phase(&pv(Some("Bound"), false)), Phase::Bound);
        assert_eq!(phase(&pv(None, false)), Phase::Available);
    }
}
