//! Planning of one local pool: desired PVs from the reports, then every observed PV through
//! the lifecycle rules (capacity drift, missing, replaced, node gone, release and scrub).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume};
use k8s_openapi::jiff::Timestamp;
use volpool_api::units::parse_duration;
use volpool_api::{
    CleanupMethod, CleanupOutcome, CleanupRequest, NodeVolumes, VolumePool, VolumeState,
    local_pv_name,
};

use super::pv::{Health, LocalPv, Phase, phase};
use super::select::{Refusal, matches, name_of};
use super::{Change, NodeInfo, Notice};
use crate::status::{self, Counted, Problem};

/// What one pool's planning looks at.
pub struct PoolInput<'a> {
    pub pool: &'a VolumePool,
    pub observed: &'a [&'a PersistentVolume],
    pub nodes: &'a HashMap<&'a str, &'a NodeInfo>,
    pub reports: &'a BTreeMap<&'a str, &'a NodeVolumes>,
    pub storage_classes: Option<&'a BTreeSet<String>>,
    pub now: Timestamp,
}

/// Accumulated output of every pool.
#[derive(Default)]
pub struct Output {
    pub deletes: Vec<Change>,
    pub applies: Vec<Change>,
    pub statuses: Vec<Change>,
    pub events: Vec<Notice>,
    pub cleanups: HashMap<String, Vec<CleanupRequest>>,
    pub wake_after: Option<Duration>,
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
        for regarding in regarding {
            self.events.push(Notice {
                regarding,
                warning,
                reason: reason.into(),
                action: action.into(),
                note: note.clone(),
            });
        }
    }
}

/// A refused pool: only its status changes.
pub fn refuse(input: &PoolInput, refusal: &Refusal, out: &mut Output) {
    let counted = count(input, &HashSet::new());
    let problems = vec![Problem::new(refusal.reason, refusal.message.clone())];
    push_status(input, &counted, 0, Some(refusal), problems, out);
}

/// Plan one valid local pool.
pub fn plan_pool(input: &PoolInput, out: &mut Output) {
    let pool = input.pool;
    let pool_name = name_of(pool);
    let mut problems = Vec::new();
    if let Some(classes) = input.storage_classes
        && !classes.contains(&pool.spec.storage_class_name)
    {
        problems.push(Problem::new(
            "StorageClassNotFound",
            format!(
                "StorageClass {:?} does not exist: claims cannot select these PVs until it is created",
                pool.spec.storage_class_name
            ),
        ));
    }

    // Desired PVs, from every report of a known node whose labels match the pool.
    let mut desired: BTreeMap<String, LocalPv> = BTreeMap::new();
    let mut at_path: HashMap<(&str, &str), &str> = HashMap::new();
    let mut contributing: BTreeSet<&str> = BTreeSet::new();
    for (node_name, report) in input.reports {
        let Some(status) = &report.status else {
            continue;
        };
        let mut volumes = status
            .volumes
            .iter()
            .filter(|v| v.pool == pool_name)
            .peekable();
        if volumes.peek().is_none() {
            continue;
        }
        let Some(node) = input.nodes.get(node_name) else {
            problems.push(Problem::new(
                "UnknownNode",
                format!("NodeVolumes {node_name:?} reports volumes but there is no Node {node_name:?}; they are ignored"),
            ));
            continue;
        };
        if !status.node_uid.is_empty() && status.node_uid != node.uid {
            problems.push(Problem::new(
                "StaleReport",
                format!("NodeVolumes {node_name:?} was written for an earlier Node of that name (nodeUID {}); its volumes are ignored until the agent reports again", status.node_uid),
            ));
            continue;
        }
        if !matches(pool.spec.node_selector.as_ref(), node.labels.as_ref()) {
            continue;
        }
        for volume in volumes {
            if !volume.volume_id.is_empty() {
                at_path.insert((node_name, volume.path.as_str()), volume.volume_id.as_str());
            }
            if volume.state != VolumeState::Ready || volume.volume_id.is_empty() {
                continue;
            }
            contributing.insert(node_name);
            let entry = volume.path.rsplit('/').next().unwrap_or_default();
            let name = local_pv_name(pool_name, node_name, entry, &volume.volume_id);
            desired.insert(
                name.clone(),
                LocalPv {
                    name,
                    pool: pool_name.to_string(),
                    node: node_name.to_string(),
                    node_uid: node.uid.clone(),
                    volume_id: volume.volume_id.clone(),
                    path: volume.path.clone(),
                    capacity_bytes: volume.capacity_bytes,
                    volume_mode: volume.volume_mode,
                    storage_class: pool.spec.storage_class_name.clone(),
                    access_modes: pool.effective_access_modes(),
                    reclaim_policy: pool.spec.reclaim_policy,
                    mount_options: pool.spec.mount_options.clone(),
                    extra_labels: pool.spec.labels.clone(),
                    health: None,
                    released_at: None,
                    cleanup_failed: false,
                },
            );
        }
    }

    let grace = parse_duration(&pool.spec.release_grace_period).unwrap_or_default();
    let method = pool.local_cleanup().unwrap_or(CleanupMethod::None);
    let extra_keys: Vec<&str> = pool.spec.labels.keys().map(String::as_str).collect();
    let mut taken: HashSet<&str> = HashSet::new();
    let mut cleaning: HashSet<String> = HashSet::new();
    for pv in input.observed {
        let Some(current) = LocalPv::from_pv(pv, &extra_keys) else {
            continue;
        };
        let (Some(name), Some(uid)) = (pv.metadata.name.as_deref(), pv.metadata.uid.as_deref())
        else {
            continue;
        };
        taken.insert(name);
        let node = input.nodes.get(current.node.as_str());
        let gone = node.is_none_or(|n| !current.node_uid.is_empty() && n.uid != current.node_uid);
        if !gone && !input.reports.contains_key(current.node.as_str()) {
            // NB: no report yet (agent not started, or its object deleted) proves nothing
            // about the disks: leave the PV alone.
            continue;
        }
        let phase = phase(pv);
        let volume = desired
            .get(name)
            .filter(|d| !gone && d.volume_id == current.volume_id);
        let Some(volume) = volume else {
            let health = if gone {
                Health::NodeGone
            } else if at_path
                .get(&(current.node.as_str(), current.path.as_str()))
                .is_some_and(|id| *id != current.volume_id)
            {
                Health::Replaced
            } else {
                Health::Missing
            };
            let why = match health {
                Health::NodeGone => format!("node {} is gone", current.node),
                Health::Replaced => {
                    format!("another disk is now at {}:{}", current.node, current.path)
                }
                Health::Missing => format!(
                    "volume {} is gone from {}:{}",
                    current.volume_id, current.node, current.path
                ),
            };
            let reason = match health {
                Health::NodeGone => "NodeGone",
                Health::Replaced => "VolumeReplaced",
                Health::Missing => "VolumeMissing",
            };
            if phase == Phase::Available {
                out.deletes.push(Change::DeletePv {
                    name: name.into(),
                    uid: uid.into(),
                    pool: pool_name.into(),
                    reason: format!("{why}; the PV was Available"),
                    scrub_seconds: None,
                });
                out.event(
                    pv,
                    true,
                    reason,
                    "Delete",
                    format!("{why}: deleting the Available PV"),
                );
            } else if current.health != Some(health) {
                let want = LocalPv {
                    health: Some(health),
                    ..current.clone()
                };
                update(
                    out,
                    pv,
                    &want,
                    format!("{why}; labelled {}", health.label()),
                );
                out.event(pv, true, reason, "Label", format!("{why}: the PV is in use, so it is kept and labelled volpool.io/health={}; nothing will be scrubbed", health.label()));
            }
            continue;
        };
        // The volume is there with the identity the PV was made for.
        match phase {
            Phase::Available => {
                let want = LocalPv {
                    released_at: None,
                    cleanup_failed: false,
                    ..volume.clone()
                };
                if want != current {
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
                    update(out, pv, &want, reason);
                }
            }
            Phase::Bound => {
                let want = LocalPv {
                    capacity_bytes: current.capacity_bytes,
                    released_at: None,
                    cleanup_failed: false,
                    ..volume.clone()
                };
                if want != current {
                    update(out, pv, &want, "pool settings or health changed".into());
                }
            }
            Phase::Released => {
                if current.reclaim_policy == volpool_api::ReclaimPolicy::Retain {
                    continue;
                }
                let released_at = current
                    .released_at
                    .as_deref()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .unwrap_or(input.now);
                let mut want = LocalPv {
                    capacity_bytes: current.capacity_bytes,
                    released_at: Some(released_at.to_string()),
                    ..volume.clone()
                };
                want.cleanup_failed = current.cleanup_failed;
                if current.released_at.is_none() {
                    out.event(pv, false, "Released", "Schedule", format!(
                        "the claim is gone: the volume will be scrubbed ({method:?}) after the release grace period of {}, then offered again",
                        pool.spec.release_grace_period
                    ));
                }
                let elapsed = input.now.duration_since(released_at);
                let left = grace.saturating_sub(Duration::try_from(elapsed).unwrap_or_default());
                if !left.is_zero() {
                    out.wake(left);
                    if want != current {
                        update(
                            out,
                            pv,
                            &want,
                            "released: waiting for the grace period".into(),
                        );
                    }
                    continue;
                }
                if method == CleanupMethod::None {
                    out.deletes.push(delete(
                        name,
                        uid,
                        pool_name,
                        "released; the pool asks for no scrub",
                        None,
                    ));
                    out.event(pv, false, "Recycled", "Delete", "the pool's cleanup is None: deleting the Released PV so a fresh one is offered".into());
                    continue;
                }
                let result = input
                    .reports
                    .get(current.node.as_str())
                    .and_then(|r| r.status.as_ref())
                    .and_then(|s| s.cleanups.iter().find(|c| c.pv_uid == uid));
                match result {
                    Some(r)
                        if r.result == CleanupOutcome::Succeeded
                            && r.volume_id == current.volume_id =>
                    {
                        let seconds = r
                            .finished_at
                            .parse::<Timestamp>()
                            .ok()
                            .map(|end| end.duration_since(released_at).as_secs_f64().max(0.0));
                        out.deletes.push(delete(
                            name,
                            uid,
                            pool_name,
                            "scrubbed by the agent",
                            seconds,
                        ));
                        out.event(pv, false, "Scrubbed", "Delete", "the agent scrubbed the volume: deleting the PV so a fresh one is offered".into());
                    }
                    Some(r) => {
                        want.cleanup_failed = true;
                        cleaning.insert(name.to_string());
                        if !current.cleanup_failed {
                            out.event(pv, true, "CleanupFailed", "Scrub", format!(
                                "the agent reported the scrub {:?}: {}; the PV stays Released until someone looks",
                                r.result, r.message
                            ));
                        }
                        problems.push(Problem::new(
                            "CleanupFailed",
                            format!("scrub of PV {name} {:?}: {}", r.result, r.message),
                        ));
                        out.cleanups
                            .entry(current.node.clone())
                            .or_default()
                            .push(request(&current, uid, method));
                    }
                    None => {
                        cleaning.insert(name.to_string());
                        out.cleanups
                            .entry(current.node.clone())
                            .or_default()
                            .push(request(&current, uid, method));
                    }
                }
                if want != current {
                    update(out, pv, &want, "released: bookkeeping".into());
                }
            }
        }
    }
    for (name, volume) in &desired {
        if !taken.contains(name.as_str()) {
            out.applies.push(Change::CreatePv { pv: volume.clone() });
        }
    }

    let counted = count(input, &cleaning);
    if counted.unhealthy > 0 {
        problems.push(Problem::new(
            "UnhealthyVolumes",
            format!(
                "{} PVs in use are missing, replaced or on a gone node (label volpool.io/health)",
                counted.unhealthy
            ),
        ));
    }
    push_status(
        input,
        &counted,
        contributing.len() as u32,
        None,
        problems,
        out,
    );
}

/// An update carries the observed resourceVersion: if the PV changed or went meanwhile, the
/// apply fails (and the next pass plans again) rather than resurrect or overwrite it.
fn update(out: &mut Output, observed: &PersistentVolume, want: &LocalPv, reason: String) {
    out.applies.push(Change::UpdatePv {
        pv: want.clone(),
        resource_version: observed.metadata.resource_version.clone(),
        reason,
    });
}

fn delete(name: &str, uid: &str, pool: &str, reason: &str, scrub_seconds: Option<f64>) -> Change {
    Change::DeletePv {
        name: name.into(),
        uid: uid.into(),
        pool: pool.into(),
        reason: reason.into(),
        scrub_seconds,
    }
}

fn request(pv: &LocalPv, uid: &str, method: CleanupMethod) -> CleanupRequest {
    CleanupRequest {
        volume_id: pv.volume_id.clone(),
        persistent_volume: pv.name.clone(),
        pv_uid: uid.into(),
        method,
    }
}

fn count(input: &PoolInput, cleaning: &HashSet<String>) -> Counted {
    let mut counted = Counted::default();
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

fn push_status(
    input: &PoolInput,
    counted: &Counted,
    nodes: u32,
    refusal: Option<&Refusal>,
    problems: Vec<Problem>,
    out: &mut Output,
) {
    let pool = input.pool;
    let status = status::pool_status(
        pool,
        counted,
        nodes,
        refusal.map(|r| (r.reason, r.message.as_str())),
        &problems,
        input.now,
    );
    if pool.status.as_ref() != Some(&status) {
        out.statuses.push(Change::PoolStatus {
            pool: name_of(pool).to_string(),
            status,
        });
    }
}
