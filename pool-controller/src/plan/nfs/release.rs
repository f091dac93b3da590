//! The release rules of an NFS pool: a Released PV waits out the pool's grace period, then
//! its directory is removed (or archived) and, only once that worked, the PV is deleted so a
//! fresh one is offered.
//!
//! ```text
//!  Released ─► grace period ─► ExportOp {Remove | Rename to archived-<dir>-<time>} ─► DeletePv
//! ```

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use volpool_api::OnRelease;
use volpool_api::units::parse_duration;

use super::pv::NfsPv;
use super::{Pool, archive_name, notify, update};
use crate::plan::change::{Change, ExportOp, Op, Plan};
use crate::plan::pv::released_since;

impl Pool<'_> {
    /// A Released PV: wait for the grace period, then remove or archive its directory, and
    /// only then delete the PV.
    pub(super) fn released(
        &self,
        pv: &PersistentVolume,
        current: &NfsPv,
        uid: &str,
        out: &mut Plan,
    ) {
        let now = self.world.now;
        let released_at = released_since(current.released_at.as_deref(), now);
        if current.released_at.is_none() {
            let fate = match self.nfs.on_release {
                OnRelease::Archive => "archived",
                _ => "removed",
            };
            notify(
                &mut out.changes,
                pv,
                false,
                "Released",
                "Schedule",
                &format!(
                    "the claim is gone: directory {} will be {fate} after the release grace period of {}, then a fresh PV is offered",
                    current.path(),
                    self.pool.spec.release_grace_period
                ),
            );
        }
        let grace = parse_duration(&self.pool.spec.release_grace_period).unwrap_or_default();
        let elapsed = Duration::try_from(now.duration_since(released_at)).unwrap_or_default();
        let left = grace.saturating_sub(elapsed);
        if !left.is_zero() {
            out.wake(left);
            if current.released_at.is_none() {
                let want = NfsPv {
                    released_at: Some(released_at.to_string()),
                    ..current.clone()
                };
                update(out, pv, want, "released: waiting for the grace period");
            }
            return;
        }
        let (op, reason, note) = self.release_op(current);
        let mut then = vec![Change::DeletePv {
            name: current.name.clone(),
            uid: uid.into(),
            pool: self.name().into(),
            reason: note.clone(),
            scrub_seconds: Some(elapsed.as_secs_f64()),
        }];
        notify(&mut then, pv, false, reason, "Delete", &note);
        out.ops.push(ExportOp {
            pool: self.name().into(),
            op,
            then,
        });
    }

    /// The directory operation that ends a release, its Event reason and note.
    fn release_op(&self, current: &NfsPv) -> (Op, &'static str, String) {
        match self.nfs.on_release {
            OnRelease::Archive => {
                let to = archive_name(&current.dir, self.world.now);
                let note = format!(
                    "directory {} renamed to {to}: deleting the PV so a fresh one is offered",
                    current.path()
                );
                let from = current.dir.clone();
                (Op::Rename { from, to }, "Archived", note)
            }
            _ => (
                Op::Remove {
                    dir: current.dir.clone(),
                },
                "Scrubbed",
                format!(
                    "directory {} and its contents removed: deleting the PV so a fresh one is offered",
                    current.path()
                ),
            ),
        }
    }
}
