//! The release rules of a local pool: a Released PV waits out the pool's grace period, then
//! its node's agent is asked to scrub the volume, and the PV is deleted only once the agent
//! reports the scrub of that very volume succeeded (so a fresh PV is offered). The request
//! names the PV and the claim it was released from: the agent checks both before it scrubs.
//!
//! ```text
//!  Released ─► grace period ─► CleanupRequest on the node ─► Succeeded ─► DeletePv
//!                                                          └► Failed ─► flagged, Warning once
//! ```

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::jiff::Timestamp;
use volpool_api::{CleanupMethod, CleanupOutcome, CleanupRequest, ReclaimPolicy};

use super::node::{Output, Pass};
use super::pv::LocalPv;
use crate::plan::pv::released_since;
use crate::plan::select::name_of;
use crate::plan::status::Problem;

impl Pass<'_, '_> {
    /// A Released PV: wait for the grace period, then have the agent scrub the volume, then
    /// delete the PV so a fresh one is offered.
    pub(super) fn released(
        &mut self,
        pv: &PersistentVolume,
        current: &LocalPv,
        volume: &LocalPv,
        uid: &str,
        out: &mut Output,
    ) {
        if current.fields.reclaim_policy == ReclaimPolicy::Retain {
            return;
        }
        let now = self.input.now;
        let released_at = released_since(current.released_at.as_deref(), now);
        let mut want = LocalPv {
            capacity_bytes: current.capacity_bytes,
            released_at: Some(released_at.to_string()),
            ..volume.clone()
        };
        want.cleanup_failed = current.cleanup_failed;
        if current.released_at.is_none() {
            out.event(pv, false, "Released", "Schedule", format!(
                "the claim is gone: the volume will be scrubbed ({:?}) after the release grace period of {}, then offered again",
                self.rules.method, self.input.pool.spec.release_grace_period
            ));
        }
        let elapsed = Duration::try_from(now.duration_since(released_at)).unwrap_or_default();
        let left = self.rules.grace.saturating_sub(elapsed);
        if !left.is_zero() {
            out.wake(left);
            if want != *current {
                out.update(pv, &want, "released: waiting for the grace period".into());
            }
            return;
        }
        let pool_name = name_of(self.input.pool);
        if self.rules.method == CleanupMethod::None {
            out.delete(
                &current.name,
                uid,
                pool_name,
                "released; the pool asks for no scrub".into(),
                None,
            );
            out.event(
                pv,
                false,
                "Recycled",
                "Delete",
                "the pool's cleanup is None: deleting the Released PV so a fresh one is offered"
                    .into(),
            );
            return;
        }
        self.scrub(pv, current, &mut want, uid, released_at, out);
        if want != *current {
            out.update(pv, &want, "released: bookkeeping".into());
        }
    }

    /// After the grace period: delete the PV once the agent scrubbed its volume, otherwise
    /// (still) ask the node for the scrub; a failed scrub is flagged and reported once.
    fn scrub(
        &mut self,
        pv: &PersistentVolume,
        current: &LocalPv,
        want: &mut LocalPv,
        uid: &str,
        released_at: Timestamp,
        out: &mut Output,
    ) {
        let name = current.name.as_str();
        let result = self
            .input
            .reports
            .get(current.node.as_str())
            .and_then(|r| r.status.as_ref())
            .and_then(|s| s.cleanups.iter().find(|c| c.pv_uid == uid));
        match result {
            Some(r)
                if r.result == CleanupOutcome::Succeeded && r.volume_id == current.volume_id =>
            {
                let seconds = r
                    .finished_at
                    .parse::<Timestamp>()
                    .ok()
                    .map(|end| end.duration_since(released_at).as_secs_f64().max(0.0));
                let pool_name = name_of(self.input.pool);
                out.delete(
                    name,
                    uid,
                    pool_name,
                    "scrubbed by the agent".into(),
                    seconds,
                );
                out.event(
                    pv,
                    false,
                    "Scrubbed",
                    "Delete",
                    "the agent scrubbed the volume: deleting the PV so a fresh one is offered"
                        .into(),
                );
                return;
            }
            Some(r) if r.result == CleanupOutcome::Running => {}
            Some(r) => {
                want.cleanup_failed = true;
                if !current.cleanup_failed {
                    out.event(pv, true, "CleanupFailed", "Scrub", format!(
                        "the agent reported the scrub {:?}: {}; the PV stays Released until someone looks",
                        r.result, r.message
                    ));
                }
                self.problems.push(Problem::new(
                    "CleanupFailed",
                    format!("scrub of PV {name} {:?}: {}", r.result, r.message),
                ));
            }
            None => {}
        }
        self.cleaning.insert(name.to_string());
        self.cleanups.push(CleanupRequest {
            volume_id: current.volume_id.clone(),
            persistent_volume: current.name.clone(),
            pv_uid: uid.into(),
            // NB: the agent refuses unless the PV is still released from this claim.
            claim_uid: claim_uid(pv),
            method: self.rules.method,
        });
    }
}

/// UID of the claim a PV is (or was) bound to; empty when its claimRef names none.
fn claim_uid(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|c| c.uid.clone())
        .unwrap_or_default()
}
