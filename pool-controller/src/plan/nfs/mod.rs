//! Planning of NFS pools: keep `minAvailable` Available PVs, each owning a `pv-<8 hex>`
//! directory of the export, never more than `maxVolumes`; release directories as the pool
//! says. Pure: what the export holds comes in as an [`ExportView`] (read by the executor
//! before planning), and the directory work goes out as [`ExportOp`]s whose follow-up writes
//! are applied only once the operation succeeded.
//!
//! ```text
//!  VolumePool(nfs) ─┐
//!  PVs ─────────────┼─► nfs::plan ─► ExportOp{MakeDir → ApplyNfsPv}   (directory before PV)
//!  ExportView ──────┤               ExportOp{Remove|Rename → DeletePv} (directory before PV)
//!  NodeVolumes ─────┘               PoolStatus, Events, UpdatePv
//! ```
//!
//! While the export is unreachable, no PV is created or deleted. A directory without a PV (a
//! crash between MKDIR and the PV create) is adopted when empty, reported when not.

pub mod export;
pub mod pv;
mod release;
mod serve;
mod status;

use std::collections::{BTreeSet, HashSet};

use k8s_openapi::api::core::v1::PersistentVolume;
use volpool_api::units::parse_bytes;
use volpool_api::{NfsSource, OnRelease, ReclaimPolicy, VolumePool, nfs_pv_name};

use self::export::new_dir;
pub use self::export::{ExportView, SeenDir, archive_name, is_pool_dir, pv_dir};
use self::pv::NfsPv;
use super::change::{Change, Plan};
pub use super::change::{ExportOp, Op};
use super::claims::{self, Offer, Stuck};
use super::events::about_pv;
use super::pv::{Phase, PoolFields, phase};
use super::select::name_of;
use super::status::{self as pool_status, Counted, Problem, write_if_changed};
use super::world::{Input, World};

/// Valid NFS pools of the world, by name.
pub fn nfs_pools(world: &World) -> Vec<&VolumePool> {
    let mut pools: Vec<&VolumePool> = world
        .pools
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| is_nfs(p))
        .collect();
    pools.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    pools
}

/// Plan every NFS pool from the world and what the executor read from the exports.
pub(super) fn plan(input: &Input) -> Plan {
    let world = input.world;
    let refused = &input.refused;
    let mut out = Plan::default();
    for pool in input.pools.iter().filter(|p| is_nfs(p)) {
        let name = name_of(pool);
        let observed = input.observed(name);
        let (Some(nfs), None) = (&pool.spec.nfs, refused.get(name)) else {
            if let Some(refusal) = refused.get(name) {
                let status =
                    pool_status::refused(pool, &count(world, pool, observed), refusal, world.now);
                out.changes.extend(write_if_changed(pool, status));
            }
            continue;
        };
        let unreachable = ExportView {
            unreachable: Some("the export was not read yet".into()),
            ..Default::default()
        };
        let pool = Pool {
            world,
            pool,
            nfs,
            view: world.exports.get(name).unwrap_or(&unreachable),
        };
        pool.plan(observed, &mut out);
    }
    out
}

/// Whether a pool is an NFS pool (one that names both kinds is a local one, and refused).
fn is_nfs(pool: &VolumePool) -> bool {
    pool.spec.nfs.is_some() && pool.spec.local.is_none()
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
        fields: PoolFields::of(pool),
        affinity: nfs.nfs_client_affinity,
        missing: false,
        released_at: None,
        claim: None,
    }
}

fn count(world: &World, pool: &VolumePool, observed: &[&PersistentVolume]) -> Counted {
    let mut counted = Counted {
        claims: claims::counts(&world.claims, &pool.spec.storage_class_name),
        ..Counted::default()
    };
    for pv in observed {
        if let Some(v) = NfsPv::from_pv(pv, &[]) {
            counted.add(phase(pv), v.missing, false, v.capacity_bytes);
        }
    }
    counted
}

/// One valid NFS pool being planned.
struct Pool<'w> {
    world: &'w World,
    pool: &'w VolumePool,
    nfs: &'w NfsSource,
    view: &'w ExportView,
}

/// What the pass over a pool's PVs found.
#[derive(Default)]
struct Seen {
    counted: Counted,
    /// Directories that have a PV.
    owned: BTreeSet<String>,
    /// PVs of the pool, not counting those deleted this pass.
    total: u32,
    /// Available PVs whose directory is there, for the Pending claims.
    offers: Vec<Offer>,
    /// UIDs of the claims a PV of the pool is bound or pre-bound to.
    claimed: HashSet<String>,
}

/// Events on a PV (and its claim) as changes.
fn notify(
    changes: &mut Vec<Change>,
    pv: &PersistentVolume,
    warning: bool,
    reason: &str,
    action: &str,
    note: &str,
) {
    changes.extend(
        about_pv(pv, warning, reason, action, note)
            .into_iter()
            .map(Change::Event),
    );
}

impl Pool<'_> {
    fn name(&self) -> &str {
        name_of(self.pool)
    }

    /// PVs first, then (export reachable) the upkeep, then the status.
    fn plan(&self, observed: &[&PersistentVolume], out: &mut Plan) {
        let mut problems: Vec<Problem> =
            Problem::missing_class(self.pool, self.world.storage_classes.as_ref())
                .into_iter()
                .collect();
        let mut seen = self.observed_pvs(observed, out);
        seen.counted.claims =
            claims::counts(&self.world.claims, &self.pool.spec.storage_class_name);
        let mut stuck = Vec::new();
        match &self.view.unreachable {
            None => self.upkeep(&mut seen, &mut problems, &mut stuck, out),
            Some(why) => self.unreachable(&seen, why, &mut stuck),
        }
        claims::explain(self.world, stuck, out);
        let status = status::status(
            self.world,
            self.pool,
            self.nfs,
            self.view,
            &seen.counted,
            problems,
        );
        out.changes.extend(write_if_changed(self.pool, status));
    }

    /// Every observed PV through the lifecycle rules; while the export is unreachable they are
    /// only counted.
    fn observed_pvs(&self, observed: &[&PersistentVolume], out: &mut Plan) -> Seen {
        let extra_keys: Vec<&str> = self.pool.spec.labels.keys().map(String::as_str).collect();
        let mut seen = Seen::default();
        for pv in observed {
            let Some(current) = NfsPv::from_pv(pv, &extra_keys) else {
                continue;
            };
            let Some(uid) = pv
                .metadata
                .uid
                .as_deref()
                .filter(|_| pv.metadata.name.is_some())
            else {
                continue;
            };
            seen.total += 1;
            seen.owned.insert(current.dir.clone());
            if let Some(claim) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                seen.claimed.extend(claim.uid.clone());
            }
            let phase = phase(pv);
            let cleaning = if self.view.unreachable.is_some() {
                Some(false)
            } else {
                self.observed_pv(pv, &current, uid, phase, out)
            };
            let present = self.view.dirs.contains_key(&current.dir);
            let unknown = self.view.unreachable.is_some();
            if phase == Phase::Available && (present || unknown) && cleaning.is_some() {
                seen.offers.push(offer(pv, &current));
            }
            match cleaning {
                Some(cleaning) => {
                    seen.counted
                        .add(phase, current.missing, cleaning, current.capacity_bytes)
                }
                None => seen.total -= 1,
            }
        }
        seen
    }

    /// Plan one PV of a reachable export: `None` when it is deleted, otherwise whether its
    /// directory is being cleaned.
    fn observed_pv(
        &self,
        pv: &PersistentVolume,
        current: &NfsPv,
        uid: &str,
        phase: Phase,
        out: &mut Plan,
    ) -> Option<bool> {
        let present = self.view.dirs.contains_key(&current.dir);
        // NB: a PV's volume source is immutable: a PV made on an earlier server or path keeps
        // it (and the listing of the current export does not see its directory).
        let want_base = NfsPv {
            name: current.name.clone(),
            server: current.server.clone(),
            export: current.export.clone(),
            ..fresh(self.pool, self.nfs, &current.dir)
        };
        match phase {
            Phase::Available if !present => {
                let path = current.path();
                out.changes.push(Change::DeletePv {
                    name: current.name.clone(),
                    uid: uid.into(),
                    pool: self.name().into(),
                    reason: format!(
                        "directory {path} is gone from the export; the PV was Available"
                    ),
                    scrub_seconds: None,
                });
                notify(
                    &mut out.changes,
                    pv,
                    true,
                    "VolumeMissing",
                    "Delete",
                    &format!("directory {path} is gone from the export: deleting the Available PV"),
                );
                return None;
            }
            Phase::Available => {
                if want_base != *current {
                    update(out, pv, want_base, "pool settings changed");
                }
            }
            Phase::Bound => {
                // NB: a claim bound to the PV got what it asked for; the pool's access modes
                // (or their default) may change only what is offered next.
                let want = NfsPv {
                    capacity_bytes: current.capacity_bytes,
                    missing: !present,
                    claim: self.keeps_claim(pv, current),
                    fields: PoolFields {
                        access_modes: current.fields.access_modes.clone(),
                        ..want_base.fields
                    },
                    ..want_base
                };
                if want.missing && !current.missing {
                    notify(
                        &mut out.changes,
                        pv,
                        true,
                        "VolumeMissing",
                        "Label",
                        &format!(
                            "directory {} is gone from the export: the PV is in use, so it is kept and labelled volpool.io/health=missing",
                            current.path()
                        ),
                    );
                }
                if want != *current {
                    update(out, pv, want, "pool settings or health changed");
                }
            }
            Phase::Released if self.retains() => {}
            Phase::Released => {
                self.released(pv, current, uid, out);
                return Some(true);
            }
        }
        Some(false)
    }

    /// Whether released directories are kept as they are.
    fn retains(&self) -> bool {
        self.pool.spec.reclaim_policy == ReclaimPolicy::Retain
            || self.nfs.on_release == OnRelease::Retain
    }

    /// Serve the Pending claims, then keep `minAvailable` Available PVs, all within
    /// `maxVolumes`: adopt empty directories without a PV first, then carve new ones; report
    /// directories with data and no PV.
    fn upkeep(
        &self,
        seen: &mut Seen,
        problems: &mut Vec<Problem>,
        stuck: &mut Vec<Stuck>,
        out: &mut Plan,
    ) {
        let nfs = self.nfs;
        let mut orphans: Vec<String> = Vec::new();
        let mut kept = Vec::new();
        for (dir, found) in &self.view.dirs {
            if seen.owned.contains(dir) {
                continue;
            }
            match found.empty {
                Some(true) => orphans.push(dir.clone()),
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
        let mut taken: BTreeSet<String> = self.view.dirs.keys().cloned().collect();
        taken.extend(seen.owned.iter().cloned());
        let mut dirs = Dirs {
            taken,
            orphans: orphans.into_iter(),
        };
        let promised = self.serve_claims(seen, &mut dirs, stuck, out);
        let total = seen.total;
        let free = seen.counted.volumes.available.saturating_sub(promised);
        let want = nfs.min_available.saturating_sub(free);
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
        for _ in 0..want.min(room) {
            let dir = self.next_dir(&mut dirs);
            self.carve(fresh(self.pool, nfs, &dir), "keeping minAvailable", out);
        }
    }

    /// The next directory to give a PV: an empty one without a PV, else a new name.
    fn next_dir(&self, dirs: &mut Dirs) -> String {
        let dir = match dirs.orphans.next() {
            Some(dir) => dir,
            None => new_dir(self.name(), self.world.now, &dirs.taken),
        };
        dirs.taken.insert(dir.clone());
        dir
    }

    /// Make the PV's directory, then (only if that worked) the PV.
    fn carve(&self, pv: NfsPv, reason: &str, out: &mut Plan) {
        let mode = self.nfs.dir_mode_bits().unwrap_or(0o777);
        out.ops.push(ExportOp {
            pool: self.name().into(),
            op: Op::MakeDir {
                dir: pv.dir.clone(),
                mode,
            },
            then: vec![Change::ApplyNfsPv {
                pv,
                resource_version: None,
                reason: reason.into(),
            }],
        });
    }
}

/// Directory names of a pass: those taken, and the empty ones without a PV, to adopt first.
struct Dirs {
    taken: BTreeSet<String>,
    orphans: std::vec::IntoIter<String>,
}

/// An Available NFS PV as a claim sees it.
fn offer(pv: &PersistentVolume, current: &NfsPv) -> Offer {
    Offer {
        name: current.name.clone(),
        capacity: current.capacity_bytes,
        modes: current.fields.access_modes.clone(),
        block: false,
        labels: pv.metadata.labels.clone().unwrap_or_default(),
        node: None,
    }
}

fn update(out: &mut Plan, observed: &PersistentVolume, want: NfsPv, reason: &str) {
    out.changes.push(Change::ApplyNfsPv {
        pv: want,
        resource_version: observed.metadata.resource_version.clone(),
        reason: reason.into(),
    });
}
