//! Claim-driven carving: a Pending claim of an NFS pool's class (with `Immediate` binding)
//! that no Available PV fits gets a directory and a PV made for it, pre-bound to it through
//! `spec.claimRef` as a dynamic provisioner does, so the binder binds that claim to that PV at
//! once. Never two PVs for one claim, never more than `maxVolumes`, never a pre-bound PV whose
//! labels the claim's selector refuses. A claim volpool cannot serve is told why.
//!
//! ```text
//!  Pending claims (oldest first) ─┬─ pre-bound already ──────────────► nothing
//!                                 ├─ asks what the pool cannot offer ─► Stuck (the fix)
//!                                 ├─ an Available PV fits ────────────► the binder takes it
//!                                 ├─ at maxVolumes ───────────────────► Stuck
//!                                 └─ otherwise ─► MKDIR ─► PV {claimRef, max(volumeSize, request)}
//! ```

use k8s_openapi::api::core::v1::PersistentVolume;

use super::pv::{ClaimRef, NfsPv};
use super::{Dirs, Pool, Seen, fresh};
use crate::plan::change::Plan;
use crate::plan::claims::{self, Claim, Stuck};

impl Pool<'_> {
    /// Serve the Pending claims of the pool's class; returns how many of the Available PVs
    /// they will take.
    pub(super) fn serve_claims(
        &self,
        seen: &mut Seen,
        dirs: &mut Dirs,
        stuck: &mut Vec<Stuck>,
        out: &mut Plan,
    ) -> u32 {
        let class = &self.pool.spec.storage_class_name;
        let waits = self.waits_for_consumer();
        let mut promised = 0;
        for claim in claims::pending(&self.world.claims, class) {
            if seen.claimed.contains(claim.uid) || (waits && !claims::in_use(self.world, &claim)) {
                continue;
            }
            if let Some(refused) = self.refuses(&claim) {
                stuck.push(refused);
                continue;
            }
            if let Some(i) = seen.offers.iter().position(|o| claim.fits(o)) {
                seen.offers.swap_remove(i);
                promised += 1;
                continue;
            }
            if waits {
                // NB: the scheduler binds these once it picked a node; volpool does not
                // pre-bind them, it only says why none fits.
                stuck.push(Stuck::too_small(&claim, self.name(), &seen.offers));
                continue;
            }
            if seen.total >= self.nfs.max_volumes {
                let message = format!(
                    "pool {} is at maxVolumes ({})",
                    self.name(),
                    self.nfs.max_volumes
                );
                stuck.push(Stuck::new(&claim, "MaxVolumes", message));
                continue;
            }
            let dir = self.next_dir(dirs);
            let base = fresh(self.pool, self.nfs, &dir);
            let pv = NfsPv {
                capacity_bytes: base.capacity_bytes.max(claim.request),
                claim: Some(ClaimRef {
                    namespace: claim.namespace.into(),
                    name: claim.name.into(),
                    uid: claim.uid.into(),
                }),
                ..base
            };
            let reason = format!("made for claim {}/{}", claim.namespace, claim.name);
            self.carve(pv, &reason, out);
            seen.total += 1;
            seen.claimed.insert(claim.uid.to_string());
        }
        promised
    }

    /// While the export is unreachable no PV is made: a Pending claim no Available PV fits
    /// is told so, unless a reachable export would not help it either (it asks what the pool
    /// does not offer, or the pool is at maxVolumes): then it hears that.
    pub(super) fn unreachable(&self, seen: &Seen, why: &str, stuck: &mut Vec<Stuck>) {
        let class = &self.pool.spec.storage_class_name;
        let waits = self.waits_for_consumer();
        for claim in claims::pending(&self.world.claims, class) {
            if seen.claimed.contains(claim.uid)
                || (waits && !claims::in_use(self.world, &claim))
                || seen.offers.iter().any(|o| claim.fits(o))
            {
                continue;
            }
            if let Some(refused) = self.refuses(&claim) {
                stuck.push(refused);
                continue;
            }
            let message = if seen.total >= self.nfs.max_volumes {
                let max = self.nfs.max_volumes;
                (
                    format!("pool {} is at maxVolumes ({max})", self.name()),
                    "MaxVolumes",
                )
            } else {
                let message = format!(
                    "pool {}: the export is unreachable ({why}); no PV is made until it answers",
                    self.name()
                );
                (message, "Unreachable")
            };
            stuck.push(Stuck::new(&claim, message.1, message.0));
        }
    }

    /// The claim a PV made for one keeps: none once that claim went to another PV before
    /// binding this one (the binder got there first), so the PV is offered to others.
    pub(super) fn keeps_claim(&self, pv: &PersistentVolume, current: &NfsPv) -> Option<ClaimRef> {
        let wanted = current.claim.as_ref()?;
        let bound = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let elsewhere = !bound
            && self
                .world
                .claims
                .iter()
                .filter_map(|c| Claim::read(c))
                .find(|c| c.uid == wanted.uid)
                .and_then(|c| c.volume_name())
                .is_some_and(|v| v != current.name);
        (!elsewhere).then(|| wanted.clone())
    }

    /// Why the pool can give the claim no PV at all, whatever it makes.
    fn refuses(&self, claim: &Claim) -> Option<Stuck> {
        let name = self.name();
        if claim.block {
            let message = format!(
                "pool {name} offers Filesystem volumes only (NFS); the claim asks volumeMode Block"
            );
            return Some(Stuck::new(claim, "VolumeMode", message));
        }
        let sample = fresh(self.pool, self.nfs, "pv-00000000");
        let labels = sample.to_pv().metadata.labels.unwrap_or_default();
        Stuck::access_modes(claim, name, &sample.fields.access_modes)
            .or_else(|| Stuck::selector(claim, name, &labels))
    }

    /// Whether the pool's class binds only once a pod uses the claim.
    fn waits_for_consumer(&self) -> bool {
        let class = &self.pool.spec.storage_class_name;
        self.world
            .storage_classes
            .as_ref()
            .and_then(|c| c.get(class))
            .is_some_and(|c| c.wait_for_consumer)
    }
}
