//! One disk gets one PV: what the PVs on a node, of every pool, already hold, so a volume the
//! node reports gets no PV while another PV is made for its identity, or while a PV whose
//! identity cannot be read is at its path.
//!
//! ```text
//!  PVs on the node (every pool) ─► Held {identity ─► PV, path ─► unreadable PV}
//!  desired PV without a PV of its name ─► Held::blocks ─► create, or a problem naming the PV
//! ```

use std::collections::HashMap;

use k8s_openapi::api::core::v1::PersistentVolume;

use super::pv::{LocalPv, UNREADABLE, unreadable};
use crate::plan::pv::ANNOTATION_VOLUME_ID;

/// What the PVs on one node already hold.
#[derive(Default)]
pub struct Held<'a> {
    /// Volume identity → the PV made for it.
    ids: HashMap<&'a str, &'a str>,
    /// Local path → the PV there whose identity cannot be read, and why.
    unreadable: HashMap<&'a str, (&'a str, String)>,
}

impl<'a> Held<'a> {
    /// Read the PVs on a node.
    pub fn of(pvs: &[&'a PersistentVolume]) -> Held<'a> {
        let mut held = Held::default();
        for pv in pvs {
            let Some(name) = pv.metadata.name.as_deref() else {
                continue;
            };
            let spec = pv.spec.as_ref();
            let Some(local) = spec.and_then(|s| s.local.as_ref()) else {
                continue;
            };
            if let Some(why) = unreadable(pv) {
                held.unreadable.insert(local.path.as_str(), (name, why));
                continue;
            }
            let annotations = pv.metadata.annotations.as_ref();
            if let Some(id) = annotations.and_then(|a| a.get(ANNOTATION_VOLUME_ID)) {
                held.ids.insert(id.as_str(), name);
            }
        }
        held
    }

    /// Why `volume` gets no PV of its own, if another PV holds its disk. A PV of its very
    /// name (its `volpool.io/pool` label edited) does not block it: the create finds it and
    /// applies the labels back.
    pub fn blocks(&self, volume: &LocalPv) -> Option<(&'static str, String)> {
        if let Some((_, why)) = self.unreadable.get(volume.path.as_str()) {
            return Some((UNREADABLE, why.clone()));
        }
        let other = self.ids.get(volume.volume_id.as_str())?;
        (*other != volume.name).then(|| {
            ("DuplicateVolume", format!(
                "volume {} at {}:{} already has PV {other}: one disk gets one PV, so no second one is made; if the disk really moved there, delete PV {other} once it is not in use",
                volume.volume_id, volume.node, volume.path
            ))
        })
    }
}
