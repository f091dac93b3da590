//! Planning of NFS pools: keep `minAvailable` Available PVs, each owning a `pv-<8 hex>`
//! directory of the export, never more than `maxVolumes`; release directories as the pool
//! says. Pure: what the export holds comes in as an [`ExportView`] (read by the executor
//! before planning), and the directory work goes out as [`ExportOp`]s whose follow-up writes
//! are applied only once the operation succeeded.
//!
//! ```text
//!  VolumePool(nfs) ─┐
//!  PVs ─────────────┼─► plan_nfs ─► ExportOp{MakeDir → ApplyNfsPv}   (directory before PV)
//!  ExportView ──────┤               ExportOp{Remove|Rename → DeletePv} (directory before PV)
//!  NodeVolumes ─────┘               PoolStatus, Events, UpdatePv
//! ```
//!
//! While the export is unreachable, no PV is created or deleted. A directory without a PV (a
//! crash between MKDIR and the PV create) is adopted when empty, reported when not.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume};
use k8s_openapi::jiff::Timestamp;
use volpool_api::units::{parse_bytes, parse_duration};
use volpool_api::{
    ExportSpace, LABEL_POOL, NfsSource, OnRelease, ReclaimPolicy, VolumePool, nfs_pv_name,
};

use super::nfs_pv::NfsPv;
use super::nfs_status;
use super::pv::{Phase, phase};
use super::select::{name_of, refusals};
use super::{Change, Notice, World};
use crate::status::{self, Counted, Problem};

/// Prefix of every directory the controller carves.
pub const DIR_PREFIX: &str = "pv-";
/// Prefix of archived directories.
pub const ARCHIVE_PREFIX: &str = "archived-";

/// What the executor read from one pool's export before planning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportView {
    /// `Some(message)` when the export could not be read: nothing is created or deleted.
    pub unreachable: Option<String>,
    /// `pv-*` directories under the root: name → what is known of it.
    pub dirs: BTreeMap<String, SeenDir>,
    /// FSSTAT (or statvfs) of the export.
    pub space: Option<ExportSpace>,
    /// The uid the controller's directories should have (`None`: unknown, not checked).
    pub expected_uid: Option<u32>,
    /// The last "not permitted" answer of a write, kept until a write succeeds.
    pub denied: Option<String>,
}

/// A `pv-*` directory of the export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeenDir {
    /// Owner's uid.
    pub uid: u32,
    /// Whether it holds nothing; read only for directories without a PV.
    pub empty: Option<bool>,
}

/// Directory work for the executor; `then` is applied only after it succeeded.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportOp {
    /// The pool whose export it is.
    pub pool: String,
    /// What to do.
    pub op: Op,
    /// Writes that must wait for the operation.
    pub then: Vec<Change>,
}

/// One directory operation under a pool's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Make the directory (or take the one there) and set its mode.
    MakeDir {
        /// Directory name.
        dir: String,
        /// Mode bits.
        mode: u32,
    },
    /// Remove the directory and its contents.
    Remove {
        /// Directory name.
        dir: String,
    },
    /// Rename the directory.
    Rename {
        /// Directory name.
        from: String,
        /// New name.
        to: String,
    },
}

/// The NFS part of a pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NfsPlan {
    /// Directory work, each with its follow-up writes.
    pub ops: Vec<ExportOp>,
    /// Writes that need no directory work.
    pub changes: Vec<Change>,
    /// Plan again after this long (a release grace period ends).
    pub wake_after: Option<Duration>,
}

impl NfsPlan {
    fn wake(&mut self, after: Duration) {
        self.wake_after = Some(self.wake_after.map_or(after, |w| w.min(after)));
    }
}

/// The directory a PV of volpool's owns, if it is an NFS PV.
pub fn pv_dir(pv: &PersistentVolume) -> Option<String> {
    let path = &pv.spec.as_ref()?.nfs.as_ref()?.path;
    Some(path.rsplit('/').next()?.to_string())
}

/// Whether a name is one the controller carves (`pv-` and 8 lowercase hex digits).
pub fn is_pool_dir(name: &str) -> bool {
    name.strip_prefix(DIR_PREFIX).is_some_and(|hex| {
        hex.len() == 8
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Valid NFS pools of the world, by name.
pub fn nfs_pools(world: &World) -> Vec<&VolumePool> {
    let mut pools: Vec<&VolumePool> = world
        .pools
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| p.spec.nfs.is_some() && p.spec.local.is_none())
        .collect();
    pools.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    pools
}

/// Plan every NFS pool from the world and what the executor read from the exports.
pub fn plan_nfs(world: &World, views: &BTreeMap<String, ExportView>) -> NfsPlan {
    let pools = nfs_pools(world);
    let refused = refusals(&pools);
    let mut by_pool: HashMap<&str, Vec<&PersistentVolume>> = HashMap::new();
    for pv in &world.pvs {
        if let Some(pool) = pv.metadata.labels.as_ref().and_then(|l| l.get(LABEL_POOL)) {
            by_pool.entry(pool.as_str()).or_default().push(pv);
        }
    }
    let mut out = NfsPlan::default();
    for pool in pools {
        let name = name_of(pool);
        let observed = by_pool.get(name).map(Vec::as_slice).unwrap_or_default();
        let (Some(nfs), None) = (&pool.spec.nfs, refused.get(name)) else {
            let refusal = refused.get(name);
            let counted = count(observed);
            let problems: Vec<Problem> = refusal
                .map(|r| Problem::new(r.reason, r.message.clone()))
                .into_iter()
                .collect();
            let status = status::pool_status(
                pool,
                &counted,
                0,
                refusal.map(|r| (r.reason, r.message.as_str())),
                &problems,
                world.now,
            );
            if pool.status.as_ref() != Some(&status) {
                out.changes.push(Change::PoolStatus {
                    pool: name.to_string(),
                    status,
                });
            }
            continue;
        };
        let unreachable = ExportView {
            unreachable: Some("the export was not read yet".into()),
            ..Default::default()
        };
        let view = views.get(name).unwrap_or(&unreachable);
        plan_pool(world, pool, nfs, observed, view, &mut out);
    }
    out
}

fn notice(
    pv: &PersistentVolume,
    warning: bool,
    reason: &str,
    action: &str,
    note: &str,
) -> Vec<Change> {
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
        .map(|regarding| {
            Change::Event(Notice {
                regarding,
                warning,
                reason: reason.into(),
                action: action.into(),
                note: note.into(),
            })
        })
        .collect()
}

fn fresh(pool: &VolumePool, nfs: &NfsSource, dir: &str) -> NfsPv {
    let name = name_of(pool);
    NfsPv {
        name: nfs_pv_name(name, dir),
        pool: name.to_string(),
        server: nfs.server.clone(),
        export: nfs.path.clone(),
        dir: dir.to_string(),
        capacity_bytes: parse_bytes(&nfs.volume_size).unwrap_or_default(),
        storage_class: pool.spec.storage_class_name.clone(),
        access_modes: pool.effective_access_modes(),
        reclaim_policy: pool.spec.reclaim_policy,
        mount_options: pool.spec.mount_options.clone(),
        extra_labels: pool.spec.labels.clone(),
        affinity: nfs.nfs_client_affinity,
        missing: false,
        released_at: None,
    }
}

/// A new directory name: `pv-` and 8 hex digits from a hash of the pool, the time and a
/// counter, never one already taken. Deterministic for the same inputs.
fn new_dir(pool: &str, now: Timestamp, taken: &BTreeSet<String>) -> String {
    let mut seed = now.as_nanosecond() as u64;
    for b in pool.bytes() {
        seed = (seed ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    loop {
        // splitmix64
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let dir = format!("{DIR_PREFIX}{:08x}", z as u32);
        if !taken.contains(&dir) {
            return dir;
        }
    }
}

/// `archived-<dir>-<UTC timestamp>`.
pub fn archive_name(dir: &str, now: Timestamp) -> String {
    format!("{ARCHIVE_PREFIX}{dir}-{}", now.strftime("%Y%m%dT%H%M%SZ"))
}

fn count(observed: &[&PersistentVolume]) -> Counted {
    let mut counted = Counted::default();
    for pv in observed {
        if let Some(v) = NfsPv::from_pv(pv, &[]) {
            counted.add(phase(pv), v.missing, false, v.capacity_bytes);
        }
    }
    counted
}

#[allow(clippy::too_many_lines)]
fn plan_pool(
    world: &World,
    pool: &VolumePool,
    nfs: &NfsSource,
    observed: &[&PersistentVolume],
    view: &ExportView,
    out: &mut NfsPlan,
) {
    let pool_name = name_of(pool);
    let mut problems = Vec::new();
    if let Some(classes) = &world.storage_classes
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
    let extra_keys: Vec<&str> = pool.spec.labels.keys().map(String::as_str).collect();
    let grace = parse_duration(&pool.spec.release_grace_period).unwrap_or_default();
    let retain =
        pool.spec.reclaim_policy == ReclaimPolicy::Retain || nfs.on_release == OnRelease::Retain;
    let reachable = view.unreachable.is_none();
    let mut counted = Counted::default();
    let mut owned: BTreeSet<String> = BTreeSet::new();
    let mut total: u32 = 0;
    for pv in observed {
        let Some(current) = NfsPv::from_pv(pv, &extra_keys) else {
            continue;
        };
        let (Some(name), Some(uid)) = (pv.metadata.name.as_deref(), pv.metadata.uid.as_deref())
        else {
            continue;
        };
        total += 1;
        owned.insert(current.dir.clone());
        let phase = phase(pv);
        let mut cleaning = false;
        let present = view.dirs.contains_key(&current.dir);
        // NB: a PV's volume source is immutable: a PV made on an earlier server or path keeps
        // it (and the listing of the current export does not see its directory).
        let want_base = NfsPv {
            name: current.name.clone(),
            server: current.server.clone(),
            export: current.export.clone(),
            ..fresh(pool, nfs, &current.dir)
        };
        if !reachable {
            counted.add(phase, current.missing, false, current.capacity_bytes);
            continue;
        }
        match phase {
            Phase::Available if !present => {
                out.changes.push(Change::DeletePv {
                    name: name.into(),
                    uid: uid.into(),
                    pool: pool_name.into(),
                    reason: format!(
                        "directory {} is gone from the export; the PV was Available",
                        current.path()
                    ),
                    scrub_seconds: None,
                });
                out.changes.extend(notice(
                    pv,
                    true,
                    "VolumeMissing",
                    "Delete",
                    &format!(
                        "directory {} is gone from the export: deleting the Available PV",
                        current.path()
                    ),
                ));
                total -= 1;
                continue;
            }
            Phase::Available => {
                if want_base != current {
                    update(out, pv, want_base, "pool settings changed");
                }
            }
            Phase::Bound => {
                let want = NfsPv {
                    capacity_bytes: current.capacity_bytes,
                    missing: !present,
                    ..want_base
                };
                if want.missing && !current.missing {
                    out.changes.extend(notice(pv, true, "VolumeMissing", "Label", &format!(
                        "directory {} is gone from the export: the PV is in use, so it is kept and labelled volpool.io/health=missing", current.path()
                    )));
                }
                if want != current {
                    update(out, pv, want, "pool settings or health changed");
                }
            }
            Phase::Released if retain => {}
            Phase::Released => {
                cleaning = true;
                let released_at = current
                    .released_at
                    .as_deref()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .unwrap_or(world.now);
                if current.released_at.is_none() {
                    out.changes.extend(notice(pv, false, "Released", "Schedule", &format!(
                        "the claim is gone: directory {} will be {} after the release grace period of {}, then a fresh PV is offered",
                        current.path(),
                        if nfs.on_release == OnRelease::Archive { "archived" } else { "removed" },
                        pool.spec.release_grace_period
                    )));
                }
                let elapsed =
                    Duration::try_from(world.now.duration_since(released_at)).unwrap_or_default();
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
                } else {
                    let (op, reason, note) = match nfs.on_release {
                        OnRelease::Archive => {
                            let to = archive_name(&current.dir, world.now);
                            let note = format!(
                                "directory {} renamed to {to}: deleting the PV so a fresh one is offered",
                                current.path()
                            );
                            (
                                Op::Rename {
                                    from: current.dir.clone(),
                                    to,
                                },
                                "Archived",
                                note,
                            )
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
                    };
                    let mut then = vec![Change::DeletePv {
                        name: name.into(),
                        uid: uid.into(),
                        pool: pool_name.into(),
                        reason: note.clone(),
                        scrub_seconds: Some(elapsed.as_secs_f64()),
                    }];
                    then.extend(notice(pv, false, reason, "Delete", &note));
                    out.ops.push(ExportOp {
                        pool: pool_name.into(),
                        op,
                        then,
                    });
                }
            }
        }
        counted.add(phase, current.missing, cleaning, current.capacity_bytes);
    }

    // Upkeep: adopt empty directories without a PV first, then carve new ones.
    if reachable {
        let mut orphans: Vec<&String> = Vec::new();
        let mut kept = Vec::new();
        for (dir, seen) in &view.dirs {
            if owned.contains(dir) {
                continue;
            }
            match seen.empty {
                Some(true) => orphans.push(dir),
                _ => kept.push(dir.as_str()),
            }
        }
        if !kept.is_empty() {
            problems.push(Problem::new(
                "OrphanDirectories",
                format!(
                    "directories {} hold data but have no PV (a PV deleted by hand?): they are left alone; offer them again by hand, or remove them",
                    kept.join(", ")
                ),
            ));
        }
        let want = nfs.min_available.saturating_sub(counted.volumes.available);
        let room = nfs.max_volumes.saturating_sub(total);
        if want > room {
            problems.push(Problem::new(
                "MaxVolumesReached",
                format!(
                    "the pool has {total} PVs, maxVolumes is {}: {} more Available PVs are wanted for minAvailable {}",
                    nfs.max_volumes,
                    want - room,
                    nfs.min_available
                ),
            ));
        }
        let mut taken: BTreeSet<String> = view.dirs.keys().cloned().collect();
        taken.extend(owned.iter().cloned());
        let mut orphans = orphans.into_iter();
        let mode = nfs.dir_mode_bits().unwrap_or(0o777);
        for _ in 0..want.min(room) {
            let dir = match orphans.next() {
                Some(dir) => dir.clone(),
                None => new_dir(pool_name, world.now, &taken),
            };
            taken.insert(dir.clone());
            let pv = fresh(pool, nfs, &dir);
            out.ops.push(ExportOp {
                pool: pool_name.into(),
                op: Op::MakeDir { dir, mode },
                then: vec![Change::ApplyNfsPv {
                    pv,
                    resource_version: None,
                    reason: "keeping minAvailable".into(),
                }],
            });
        }
    }

    let status = nfs_status::status(world, pool, nfs, view, &counted, problems);
    if pool.status.as_ref() != Some(&status) {
        out.changes.push(Change::PoolStatus {
            pool: pool_name.to_string(),
            status,
        });
    }
}

fn update(out: &mut NfsPlan, observed: &PersistentVolume, want: NfsPv, reason: &str) {
    out.changes.push(Change::ApplyNfsPv {
        pv: want,
        resource_version: observed.metadata.resource_version.clone(),
        reason: reason.into(),
    });
}
