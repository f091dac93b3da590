//! The phase of a PersistentVolume as volpool reads it. One rule for both programs: the
//! controller asks for a scrub only of a PV it reads `Released`, and the agent scrubs only a
//! volume whose PV it reads `Released` by this same rule.
//!
//! ```text
//!  PersistentVolume {spec.claimRef, status.phase} ──► phase ──► Available | Bound | Released
//! ```

use k8s_openapi::api::core::v1::PersistentVolume;

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
