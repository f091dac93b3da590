//! Planning of local pools: desired PVs from the nodes' reports, then every observed PV through
//! the lifecycle rules (capacity drift, missing, replaced, node gone, release and scrub), then
//! the scrub requests each node's NodeVolumes should hold.
//!
//! ```text
//!  reports ──► desired ──┐
//!  PVs ──────────────────┼─► each PV: missing? ─► delete (Available) / label (in use)
//!                        │            Available / Bound ─► update when the pool or disk changed
//!                        │            Released ─► grace ─► scrub request ─► delete when scrubbed
//!                        └─► desired without a PV ─► create
//! ```

mod desired;
mod explain;
pub mod pv;
mod release;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use volpool_api::units::parse_duration;
use volpool_api::{
    CleanupMethod, CleanupRequest, LABEL_POOL, NodeVolumes, VolumePool, optional_selector_matches,
};

use self::desired::{Desired, PoolInput, desired};
use self::pv::{Health, LocalPv};
use super::change::{Change, Plan};
use super::claims;
use super::events::{Notice, about_pv};
use super::pv::{Phase, phase};
use super::select::name_of;
use super::status::{self, Counted, Problem};
use super::world::{Input, NodeInfo, World};

/// Accumulated output of every local pool.
#[derive(Default)]
struct Output {
    deletes: Vec<Change>,
    applies: Vec<Change>,
    statuses: Vec<Change>,
    events: Vec<Notice>,
    cleanups: HashMap<String, Vec<CleanupRequest>>,
    wake_after: Option<Duration>,
}

impl Output {
    fn wake(&mut self, after: Duration) {
        self.wake_after = Some(self.wake_after.map_or(after, |w| w.min(after)));
    }

    fn event(
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

    fn delete(&mut self, name: &str, uid: &str, pool: &str, reason: String, seconds: Option<f64>) {
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
    fn update(&mut self, observed: &PersistentVolume, want: &LocalPv, reason: String) {
        self.applies.push(Change::UpdatePv {
            pv: want.clone(),
            resource_version: observed.metadata.resource_version.clone(),
            reason,
        });
    }
}

/// Plan every local pool.
pub(super) fn plan(input: &Input) -> Plan {
    let world = input.world;
    let nodes: HashMap<&str, &NodeInfo> =
        world.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let reports: BTreeMap<&str, &NodeVolumes> = world
        .reports
        .iter()
        .filter_map(|r| Some((r.metadata.name.as_deref()?, r.as_ref())))
        .collect();
    let mut out = Output::default();
    let mut planned: HashMap<&str, &VolumePool> = HashMap::new();
    for pool in input.pools.iter().filter(|p| p.spec.local.is_some()) {
        let name = name_of(pool);
        let refused = input.refused.get(name);
        let input = PoolInput {
            world,
            pool,
            observed: input.observed(name),
            nodes: &nodes,
            reports: &reports,
            storage_classes: world.storage_classes.as_ref(),
            now: world.now,
        };
        match refused {
            Some(refusal) => {
                let status =
                    status::refused(pool, &count(&input, &HashSet::new()), refusal, input.now);
                out.statuses.extend(status::write_if_changed(pool, status));
            }
            None => {
                planned.insert(name, pool);
                plan_pool(&input, &mut out);
            }
        }
    }
    let cleanups = cleanup_changes(world, &nodes, &reports, &planned, &mut out.cleanups);
    let served: Vec<&VolumePool> = input
        .pools
        .iter()
        .filter(|p| planned.contains_key(name_of(p)))
        .copied()
        .collect();
    let stuck = explain::stuck_claims(input, &served);
    let mut changes = out.deletes;
    changes.extend(out.applies);
    changes.extend(cleanups);
    changes.extend(out.statuses);
    changes.extend(out.events.into_iter().map(Change::Event));
    let mut plan = Plan {
        changes,
        wake_after: out.wake_after,
        ..Plan::default()
    };
    claims::explain(world, stuck, &mut plan);
    plan
}

/// The scrub requests each node should hold: those planned now, plus the requests of pools
/// not planned this pass (invalid, deleted, NFS, or left to another controller by
/// `--pool-selector`), which stay as they are: bad input never cancels a scrub nor starts one.
/// A request's pool is its PV's label or, once the PV is gone, the pool the node reports the
/// volume in; a request with neither is dropped only on a node one of the planned pools covers.
fn cleanup_changes(
    world: &World,
    nodes: &HashMap<&str, &NodeInfo>,
    reports: &BTreeMap<&str, &NodeVolumes>,
    planned: &HashMap<&str, &VolumePool>,
    wanted_by_node: &mut HashMap<String, Vec<CleanupRequest>>,
) -> Vec<Change> {
    let existing: HashMap<&str, &PersistentVolume> = world
        .pvs
        .iter()
        .filter_map(|pv| Some((pv.metadata.name.as_deref()?, pv.as_ref())))
        .collect();
    let mut changes = Vec::new();
    for (node, report) in reports {
        let mut wanted = wanted_by_node.remove(*node).unwrap_or_default();
        let labels = nodes.get(node).and_then(|n| n.labels.as_ref());
        let covered = planned
            .values()
            .any(|p| optional_selector_matches(p.spec.node_selector.as_ref(), labels));
        let reported = report.status.iter().flat_map(|s| &s.volumes);
        for request in &report.spec.cleanups {
            let pool = match existing.get(request.persistent_volume.as_str()) {
                Some(pv) => pv.metadata.labels.as_ref().and_then(|l| l.get(LABEL_POOL)),
                None => reported
                    .clone()
                    .find(|v| v.volume_id == request.volume_id)
                    .map(|v| &v.pool),
            };
            let ours = match pool {
                Some(pool) => planned.contains_key(pool.as_str()),
                None => covered,
            };
            if !ours {
                wanted.push(request.clone());
            }
        }
        wanted.sort_by(|a, b| a.persistent_volume.cmp(&b.persistent_volume));
        if wanted != report.spec.cleanups {
            changes.push(Change::SetCleanups {
                node: node.to_string(),
                resource_version: report.metadata.resource_version.clone(),
                cleanups: wanted,
            });
        }
    }
    changes
}

/// One pool's pass over its observed PVs.
struct Pass<'i, 'a> {
    input: &'i PoolInput<'a>,
    desired: &'i Desired<'a>,
    extra_keys: Vec<&'a str>,
    grace: Duration,
    method: CleanupMethod,
    problems: Vec<Problem>,
    /// PVs being scrubbed (counted as cleaning).
    cleaning: HashSet<String>,
}

/// Plan one valid local pool.
fn plan_pool(input: &PoolInput, out: &mut Output) {
    let pool = input.pool;
    let mut problems: Vec<Problem> = Problem::missing_class(pool, input.storage_classes)
        .into_iter()
        .collect();
    let desired = desired(input, &mut problems);
    let mut pass = Pass {
        input,
        desired: &desired,
        extra_keys: pool.spec.labels.keys().map(String::as_str).collect(),
        grace: parse_duration(&pool.spec.release_grace_period).unwrap_or_default(),
        method: pool.local_cleanup().unwrap_or(CleanupMethod::None),
        problems,
        cleaning: HashSet::new(),
    };
    let mut taken: HashSet<&str> = HashSet::new();
    for pv in input.observed {
        taken.extend(pass.observed_pv(pv, out));
    }
    for (name, volume) in &desired.pvs {
        if !taken.contains(name.as_str()) {
            out.applies.push(Change::CreatePv { pv: volume.clone() });
        }
    }

    let counted = count(input, &pass.cleaning);
    let mut problems = pass.problems;
    if counted.volumes.unhealthy > 0 {
        problems.push(Problem::new(
            "UnhealthyVolumes",
            format!(
                "{} PVs in use are missing, replaced or on a gone node (label volpool.io/health)",
                counted.volumes.unhealthy
            ),
        ));
    }
    let nodes = desired.contributing.len() as u32;
    let status = status::pool_status(pool, &counted, nodes, None, &problems, input.now);
    out.statuses.extend(status::write_if_changed(pool, status));
}

impl<'a> Pass<'_, 'a> {
    /// Plan one observed PV; returns its name when it is a local PV of this pool (its volume
    /// then needs no new PV).
    fn observed_pv(&mut self, pv: &'a PersistentVolume, out: &mut Output) -> Option<&'a str> {
        let current = LocalPv::from_pv(pv, &self.extra_keys)?;
        let (Some(name), Some(uid)) = (pv.metadata.name.as_deref(), pv.metadata.uid.as_deref())
        else {
            return None;
        };
        let node = self.input.nodes.get(current.node.as_str());
        let gone = node.is_none_or(|n| !current.node_uid.is_empty() && n.uid != current.node_uid);
        if !gone && !self.input.reports.contains_key(current.node.as_str()) {
            // NB: no report yet (agent not started, or its object deleted) proves nothing
            // about the disks: leave the PV alone.
            return Some(name);
        }
        let phase = phase(pv);
        let volume = self
            .desired
            .pvs
            .get(name)
            .filter(|d| !gone && d.volume_id == current.volume_id);
        let Some(volume) = volume else {
            let health = self.health(&current, gone);
            unhealthy(pv, &current, health, phase, uid, out);
            return Some(name);
        };
        // The volume is there with the identity the PV was made for.
        match phase {
            Phase::Available => available(pv, &current, volume, out),
            Phase::Bound => {
                let want = LocalPv {
                    capacity_bytes: current.capacity_bytes,
                    released_at: None,
                    cleanup_failed: false,
                    ..volume.clone()
                };
                if want != current {
                    out.update(pv, &want, "pool settings or health changed".into());
                }
            }
            Phase::Released => self.released(pv, &current, volume, uid, out),
        }
        Some(name)
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

fn count(input: &PoolInput, cleaning: &HashSet<String>) -> Counted {
    let mut counted = Counted {
        claims: claims::counts(&input.world.claims, &input.pool.spec.storage_class_name),
        ..Counted::default()
    };
    for pv in input.observed {
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
