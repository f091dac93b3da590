//! One local pool on one node: the volumes the node's report offers the pool against the
//! pool's PVs labelled with the node. What it finds besides the writes (counts, problems,
//! scrub requests) is a [`NodePart`], kept between passes so that a pass re-plans only the
//! nodes whose report, Node or PVs changed.
//!
//! ```text
//!  report (this node) ──► desired ──┐
//!  PVs on the node ─────────────────┼─► each PV: missing? ─► delete (Available) / label (in use)
//!                                   │            Available / Bound ─► update when the pool or disk changed
//!                                   │            Released ─► grace ─► scrub request ─► delete when scrubbed
//!                                   └─► desired without a PV ─► create (unless `held.rs` blocks it)
//!                                   ══► NodePart {counts, problems, scrub requests}
//! ```
//!
//! A PV is on the node its node affinity names, whatever its `volpool.io/node` label says (an
//! edited label is written back). It was made for a Node of one UID: when the Node is gone, or
//! re-created under another UID, the PV is the old node's (`node-gone`) until the agent of
//! the Node now of that name reports the very identity at the very path again; then the PV
//! is that disk's again and takes the new UID.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use volpool_api::units::parse_duration;
use volpool_api::{CleanupMethod, CleanupRequest, LABEL_NODE, VolumePool};

use super::desired::{Desired, PoolInput, desired};
use super::held::Held;
use super::pv::{Health, LocalPv, UNREADABLE, unreadable};
use crate::plan::change::Change;
use crate::plan::events::{Notice, about_pv};
use crate::plan::pv::{Phase, phase};
use crate::plan::status::{Counted, Problem};

/// The writes and Events of the nodes planned in a pass.
#[derive(Default)]
pub struct Output {
    pub deletes: Vec<Change>,
    pub applies: Vec<Change>,
    pub events: Vec<Notice>,
    pub wake_after: Option<Duration>,
    /// How many grace periods are running.
    pub wakes: usize,
}

impl Output {
    pub fn wake(&mut self, after: Duration) {
        self.wakes += 1;
        self.wake_after = Some(self.wake_after.map_or(after, |w| w.min(after)));
    }

    /// How many writes and Events so far.
    pub fn len(&self) -> usize {
        self.deletes.len() + self.applies.len() + self.events.len()
    }

    pub fn event(
        &mut self,
        pv: &PersistentVolume,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.events
            .extend(about_pv(pv, warning, reason, action, &note));
    }

    pub fn delete(
        &mut self,
        name: &str,
        uid: &str,
        pool: &str,
        reason: String,
        seconds: Option<f64>,
    ) {
        self.deletes.push(Change::DeletePv {
            name: name.into(),
            uid: uid.into(),
            pool: pool.into(),
            reason,
            scrub_seconds: seconds,
        });
    }

    /// An update carries the observed resourceVersion: if the PV changed or went meanwhile,
    /// the apply fails (and the next pass plans again) rather than resurrect or overwrite it.
    pub fn update(&mut self, observed: &PersistentVolume, want: &LocalPv, reason: String) {
        self.applies.push(Change::UpdatePv {
            pv: want.clone(),
            resource_version: observed.metadata.resource_version.clone(),
            reason,
        });
    }
}

/// What a valid pool asks of every node's PVs.
pub struct Rules<'a> {
    /// The pool's own label keys (a PV's other labels are not the pool's business).
    pub extra_keys: Vec<&'a str>,
    /// `releaseGracePeriod`.
    pub grace: Duration,
    /// How a released volume is scrubbed.
    pub method: CleanupMethod,
}

impl<'a> Rules<'a> {
    pub fn of(pool: &'a VolumePool) -> Rules<'a> {
        Rules {
            extra_keys: pool.spec.labels.keys().map(String::as_str).collect(),
            grace: parse_duration(&pool.spec.release_grace_period).unwrap_or_default(),
            method: pool.local_cleanup().unwrap_or(CleanupMethod::None),
        }
    }
}

/// What planning one local pool on one node found, besides the writes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodePart {
    /// The pool's PVs on the node, by phase (claims not counted here).
    pub counted: Counted,
    /// Whether the node offers the pool at least one Ready volume.
    pub contributing: bool,
    /// What is wrong with the node's report (unknown or re-created Node).
    pub report_problems: Vec<Problem>,
    /// What is wrong with the node's PVs: failed scrubs, unreadable identities, disks that
    /// already have a PV.
    pub release_problems: Vec<Problem>,
    /// The scrub requests the node should hold for the pool.
    pub cleanups: Vec<CleanupRequest>,
}

impl NodePart {
    /// Whether there is nothing to remember.
    pub fn is_empty(&self) -> bool {
        *self == NodePart::default()
    }
}

/// One pool's pass over its PVs on one node.
pub(super) struct Pass<'i, 'a> {
    pub input: &'i PoolInput<'a>,
    desired: &'i Desired<'a>,
    pub rules: &'i Rules<'a>,
    pub problems: Vec<Problem>,
    /// PVs being scrubbed (counted as cleaning).
    pub cleaning: HashSet<String>,
    /// The scrub requests for the node.
    pub cleanups: Vec<CleanupRequest>,
}

/// Plan one valid local pool on one node.
pub fn plan_node<'a>(
    input: &PoolInput<'a>,
    rules: &Rules<'a>,
    node: &'a str,
    (observed, held): (&[&'a PersistentVolume], &Held),
    out: &mut Output,
) -> NodePart {
    let mut report_problems = Vec::new();
    let desired = desired(input, node, &mut report_problems);
    let mut pass = Pass {
        input,
        desired: &desired,
        rules,
        problems: Vec::new(),
        cleaning: HashSet::new(),
        cleanups: Vec::new(),
    };
    let mut taken: HashSet<&str> = HashSet::new();
    let mut counted = Counted::default();
    for pv in observed {
        // NB: read each PV once, for its plan and its count (a pass may read 100,000).
        let Some(current) = LocalPv::from_pv(pv, &rules.extra_keys) else {
            pass.problems
                .extend(unreadable(pv).map(|why| Problem::new(UNREADABLE, why)));
            continue;
        };
        taken.extend(pass.observed_pv(pv, &current, out));
        let cleaning = pass.cleaning.contains(&current.name);
        let bytes = current.capacity_bytes;
        counted.add(phase(pv), current.health.is_some(), cleaning, bytes);
    }
    for (name, volume) in &desired.pvs {
        if taken.contains(name.as_str()) {
            continue;
        }
        match held.blocks(volume) {
            Some((reason, why)) => {
                let problem = Problem::new(reason, why);
                if !pass.problems.contains(&problem) {
                    pass.problems.push(problem);
                }
            }
            None => out.applies.push(Change::CreatePv { pv: volume.clone() }),
        }
    }
    NodePart {
        counted,
        contributing: !desired.contributing.is_empty(),
        report_problems,
        release_problems: pass.problems,
        cleanups: pass.cleanups,
    }
}

/// The part of a pool that is not planned (refused): its PVs counted, nothing else.
pub fn count_only(observed: &[&PersistentVolume]) -> NodePart {
    NodePart {
        counted: count(observed, &HashSet::new()),
        ..NodePart::default()
    }
}

impl<'a> Pass<'_, 'a> {
    /// Plan one observed PV; returns its name when it is a local PV of this pool (its volume
    /// then needs no new PV).
    fn observed_pv(
        &mut self,
        pv: &'a PersistentVolume,
        current: &LocalPv,
        out: &mut Output,
    ) -> Option<&'a str> {
        let name = pv.metadata.name.as_deref()?;
        pv.metadata.uid.as_ref()?;
        // The volume the node's report offers under this PV's name, if it is the PV's very
        // identity at its very path (the path of a PV cannot change).
        let volume = self
            .desired
            .pvs
            .get(name)
            .filter(|d| d.volume_id == current.volume_id && d.path == current.path);
        let node = self.input.nodes.get(current.node.as_str());
        let recreated =
            node.is_some_and(|n| !current.node_uid.is_empty() && n.uid != current.node_uid);
        // NB: a volume is only desired from a report written for the Node of that name now, so
        // a re-created Node's agent reporting the disk again takes the PV back.
        let gone = node.is_none() || (recreated && volume.is_none());
        let writes = |out: &Output| out.deletes.len() + out.applies.len();
        let before = writes(out);
        if gone || self.input.reports.contains_key(current.node.as_str()) {
            self.planned_pv(pv, current, volume.filter(|_| !gone), gone, out);
        }
        // NB: without a report yet (agent not started, or its object deleted), which proves
        // nothing about the disks, only the label is written back.
        if writes(out) == before {
            relabel(pv, current, out);
        }
        Some(name)
    }

    /// Plan a PV of this pool against the volume its node offers for it, if any.
    fn planned_pv(
        &mut self,
        pv: &'a PersistentVolume,
        current: &LocalPv,
        volume: Option<&LocalPv>,
        gone: bool,
        out: &mut Output,
    ) {
        let uid = pv.metadata.uid.as_deref().unwrap_or_default();
        let phase = phase(pv);
        let Some(volume) = volume else {
            let health = self.health(current, gone);
            unhealthy(pv, current, health, phase, uid, out);
            return;
        };
        if volume.node_uid != current.node_uid && !current.node_uid.is_empty() {
            out.event(pv, false, "NodeReturned", "Update", format!(
                "node {} was re-created (UID {}) and its agent reports volume {} at {} again: the PV is that disk's again",
                current.node, volume.node_uid, current.volume_id, current.path
            ));
        }
        // The volume is there with the identity the PV was made for.
        match phase {
            Phase::Available => available(pv, current, volume, out),
            Phase::Bound => {
                let want = LocalPv {
                    capacity_bytes: current.capacity_bytes,
                    released_at: None,
                    cleanup_failed: false,
                    ..volume.clone()
                };
                if want != *current {
                    out.update(pv, &want, "pool settings or health changed".into());
                }
            }
            Phase::Released => self.released(pv, current, volume, uid, out),
        }
    }

    /// Why the volume a PV was made for is no longer offered.
    fn health(&self, current: &LocalPv, gone: bool) -> Health {
        let at_path = self
            .desired
            .at_path
            .get(&(current.node.as_str(), current.path.as_str()));
        if gone {
            Health::NodeGone
        } else if at_path.is_some_and(|id| *id != current.volume_id) {
            Health::Replaced
        } else {
            Health::Missing
        }
    }
}

/// Write back the `volpool.io/node` label of a PV whose label someone edited or removed (its
/// node is its node affinity's, which the API keeps as it was made).
fn relabel(pv: &PersistentVolume, current: &LocalPv, out: &mut Output) {
    let label = pv.metadata.labels.as_ref().and_then(|l| l.get(LABEL_NODE));
    if label == Some(&current.node) {
        return;
    }
    let was = label.map_or("removed".to_string(), |l| format!("{l:?}"));
    out.update(pv, current, format!("label {LABEL_NODE} restored"));
    out.event(pv, false, "LabelRestored", "Update", format!(
        "label {LABEL_NODE} was {was}; set back to {}, the node of the PV's nodeAffinity (a PV cannot move to another node)",
        current.node
    ));
}

/// The volume behind a PV is gone: delete the PV when it is Available; label it (once) when it
/// is in use, and never scrub it.
fn unhealthy(
    pv: &PersistentVolume,
    current: &LocalPv,
    health: Health,
    phase: Phase,
    uid: &str,
    out: &mut Output,
) {
    let why = health.why(current);
    if phase == Phase::Available {
        let reason = format!("{why}; the PV was Available");
        out.delete(&current.name, uid, &current.pool, reason, None);
        out.event(
            pv,
            true,
            health.reason(),
            "Delete",
            format!("{why}: deleting the Available PV"),
        );
    } else if current.health != Some(health) {
        let want = LocalPv {
            health: Some(health),
            ..current.clone()
        };
        out.update(pv, &want, format!("{why}; labelled {}", health.label()));
        out.event(pv, true, health.reason(), "Label", format!("{why}: the PV is in use, so it is kept and labelled volpool.io/health={}; nothing will be scrubbed", health.label()));
    }
}

/// An Available PV follows its pool's settings and its disk's size.
fn available(pv: &PersistentVolume, current: &LocalPv, volume: &LocalPv, out: &mut Output) {
    let want = LocalPv {
        released_at: None,
        cleanup_failed: false,
        ..volume.clone()
    };
    if want == *current {
        return;
    }
    let reason = if want.capacity_bytes != current.capacity_bytes {
        let note = format!(
            "capacity changed from {} to {} bytes: the disk was resized",
            current.capacity_bytes, want.capacity_bytes
        );
        out.event(pv, false, "CapacityUpdated", "Update", note.clone());
        note
    } else {
        "pool settings or health changed".to_string()
    };
    out.update(pv, &want, reason);
}

fn count(observed: &[&PersistentVolume], cleaning: &HashSet<String>) -> Counted {
    let mut counted = Counted::default();
    for pv in observed {
        let Some(local) = LocalPv::from_pv(pv, &[]) else {
            continue;
        };
        let is_cleaning = pv
            .metadata
            .name
            .as_ref()
            .is_some_and(|n| cleaning.contains(n));
        counted.add(
            phase(pv),
            local.health.is_some(),
            is_cleaning,
            local.capacity_bytes,
        );
    }
    counted
}
