//! `VolumePool.status`, for pools of both kinds: counts by phase, capacity, contributing nodes
//! and the `Ready` / `Degraded` conditions (an NFS pool adds its own, see `nfs/status.rs`).
//! Pure: `plan` builds the status and only writes it when it differs from the observed one (a
//! condition keeps its `lastTransitionTime` while its status holds).
//!
//! ```text
//!  Counted + problems + refusal ──► pool_status ──► VolumePoolStatus ──► write_if_changed ──► Change
//! ```

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use volpool_api::{CapacityBytes, ClaimCounts, VolumeCounts, VolumePool, VolumePoolStatus};

use super::change::Change;
use super::pv::Phase;
use super::select::{Refusal, name_of};

/// PV counts and bytes of one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Counts by phase.
    pub volumes: VolumeCounts,
    /// Bytes by phase.
    pub capacity: CapacityBytes,
    /// Claims of the pool's class.
    pub claims: ClaimCounts,
}

impl Counted {
    /// Count one PV. An unhealthy PV counts only as unhealthy; a Released one being scrubbed
    /// only as cleaning.
    pub fn add(&mut self, phase: Phase, unhealthy: bool, cleaning: bool, bytes: u64) {
        if unhealthy {
            self.volumes.unhealthy += 1;
            return;
        }
        match phase {
            Phase::Available => {
                self.volumes.available += 1;
                self.capacity.available += bytes;
            }
            Phase::Bound => {
                self.volumes.bound += 1;
                self.capacity.bound += bytes;
            }
            Phase::Released if cleaning => self.volumes.cleaning += 1,
            Phase::Released => self.volumes.released += 1,
        }
    }

    /// Add another count of PVs (claims are not added).
    pub fn absorb(&mut self, other: &Counted) {
        let (v, o) = (&mut self.volumes, &other.volumes);
        v.available += o.available;
        v.bound += o.bound;
        v.released += o.released;
        v.cleaning += o.cleaning;
        v.unhealthy += o.unhealthy;
        self.capacity.available += other.capacity.available;
        self.capacity.bound += other.capacity.bound;
    }
}

/// Something wrong with a pool's input, shown in its `Degraded` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// PascalCase reason.
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

impl Problem {
    /// A problem.
    pub fn new(reason: &'static str, message: String) -> Problem {
        Problem { reason, message }
    }

    /// The pool's StorageClass is not among `classes` (`None`: unknown, not checked).
    pub fn missing_class<V>(
        pool: &VolumePool,
        classes: Option<&BTreeMap<String, V>>,
    ) -> Option<Problem> {
        let classes = classes?;
        (!classes.contains_key(&pool.spec.storage_class_name)).then(|| {
            Problem::new(
                "StorageClassNotFound",
                format!(
                    "StorageClass {:?} does not exist: claims cannot select these PVs until it is created",
                    pool.spec.storage_class_name
                ),
            )
        })
    }
}

/// The conditions a pool has now, and the generation it is planned at.
pub fn observed(pool: &VolumePool) -> (&[Condition], i64) {
    let old = pool
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    (old, pool.metadata.generation.unwrap_or_default())
}

/// The status of a pool that is not planned at all: its counts, and the refusal as both
/// `Ready=False` and `Degraded`.
pub fn refused(
    pool: &VolumePool,
    counted: &Counted,
    refusal: &Refusal,
    now: Timestamp,
) -> VolumePoolStatus {
    let problems = [Problem::new(refusal.reason, refusal.message.clone())];
    pool_status(pool, counted, 0, Some(refusal), &problems, now)
}

/// The write of `status`, unless the pool already has it (an idle pass writes nothing).
pub fn write_if_changed(pool: &VolumePool, status: VolumePoolStatus) -> Option<Change> {
    (pool.status.as_ref() != Some(&status)).then(|| Change::PoolStatus {
        pool: name_of(pool).to_string(),
        status,
    })
}

/// The status a pool should have. `refusal` marks a pool that is not planned at all.
pub fn pool_status(
    pool: &VolumePool,
    counted: &Counted,
    nodes: u32,
    refusal: Option<&Refusal>,
    problems: &[Problem],
    now: Timestamp,
) -> VolumePoolStatus {
    let (old, generation) = observed(pool);
    let ready = match refusal {
        Some(refusal) => ("False", refusal.reason.to_string(), refusal.message.clone()),
        None => (
            "True",
            "Reconciled".to_string(),
            format!(
                "{} PVs Available, {} Bound, from {nodes} nodes",
                counted.volumes.available, counted.volumes.bound
            ),
        ),
    };
    let degraded = match problems.first() {
        Some(first) => {
            const SHOWN: usize = 5;
            let mut message: Vec<&str> = problems
                .iter()
                .take(SHOWN)
                .map(|p| p.message.as_str())
                .collect();
            let more = problems.len().saturating_sub(SHOWN);
            let tail = format!("and {more} more");
            if more > 0 {
                message.push(&tail);
            }
            ("True", first.reason.to_string(), message.join("; "))
        }
        None => (
            "False",
            "AsExpected".to_string(),
            "no problem found".to_string(),
        ),
    };
    let conditions = [("Ready", ready), ("Degraded", degraded)]
        .into_iter()
        .map(|(type_, (status, reason, message))| {
            condition(old, type_, status, reason, message, generation, now)
        })
        .collect();
    VolumePoolStatus {
        observed_generation: generation,
        volumes: counted.volumes.clone(),
        capacity_bytes: counted.capacity.clone(),
        claims: counted.claims.clone(),
        nodes,
        export: None,
        conditions,
    }
}

/// A condition that keeps the `lastTransitionTime` of `old`'s condition of that type while its
/// status holds (so an unchanged pool's status is unchanged).
pub fn condition(
    old: &[Condition],
    type_: &str,
    status: &str,
    reason: String,
    message: String,
    generation: i64,
    now: Timestamp,
) -> Condition {
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason,
        message,
        observed_generation: Some(generation),
        last_transition_time: since,
    }
}
