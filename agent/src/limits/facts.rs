//! What the limits check found: the node's facts, each container's limits and the result of
//! each requirement. Plain data, shared by collecting, naming, checking and every output.
//!
//! ```text
//!  collect ─► Report { node: NodeFacts, containers: [ContainerFacts { requirements: [RequirementResult] }] }
//!                ─► status() ─► NodeVolumes.status.limits
//! ```

use std::collections::BTreeMap;

use serde::Serialize;
use volpool_api::{NodeLimits, RuntimeLimits};

use super::procfs::Limit;

/// The container runtime daemon and its limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeFacts {
    /// `crio`, `containerd` or `dockerd`.
    pub name: String,
    /// Its pid in the host PID namespace.
    pub pid: u32,
    /// RLIMIT_MEMLOCK, bytes.
    pub memlock: Limit,
    /// RLIMIT_NOFILE.
    pub nofile: Limit,
    /// RLIMIT_NPROC.
    pub nproc: Limit,
}

/// Facts about the node as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFacts {
    /// `/proc/sys/vm/max_map_count` (null when unreadable).
    pub vm_max_map_count: Option<u64>,
    /// `Mlocked` of `/proc/meminfo`, bytes.
    pub mlocked_bytes: Option<u64>,
    /// `Unevictable` of `/proc/meminfo`, bytes.
    pub unevictable_bytes: Option<u64>,
    /// `SwapTotal` above 0.
    pub swap_enabled: bool,
    /// The runtime daemon; null when none runs (or it is not visible: the agent needs
    /// `hostPID` or the host's `/proc`).
    pub runtime: Option<RuntimeFacts>,
}

/// One container's limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerFacts {
    /// The pod's UID.
    #[serde(rename = "podUID")]
    pub pod_uid: String,
    /// The container ID (without the runtime prefix).
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The pod's namespace (empty without a cluster to ask).
    pub namespace: String,
    /// The pod's name (empty without a cluster to ask).
    pub pod: String,
    /// The container's name (empty without a cluster to ask).
    pub container: String,
    /// RLIMIT_MEMLOCK of its main process, bytes.
    pub memlock: Limit,
    /// RLIMIT_NOFILE of its main process.
    pub nofile: Limit,
    /// RLIMIT_NPROC of its main process.
    pub nproc: Limit,
    /// `VmLck` summed over its processes, bytes.
    pub locked_memory_bytes: u64,
    /// Each requirement checked, and whether it is met.
    pub requirements: Vec<RequirementResult>,
    /// Its main process runs Elasticsearch.
    #[serde(skip)]
    pub elasticsearch: bool,
    /// Elasticsearch was asked to lock its memory (`bootstrap.memory_lock=true`).
    #[serde(skip)]
    pub memory_lock_requested: bool,
    /// The pod's `volpool.io/require-*` annotations.
    #[serde(skip)]
    pub annotations: BTreeMap<String, String>,
}

/// Everything the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Node facts.
    #[serde(flatten)]
    pub node: NodeFacts,
    /// Containers found in the host's process table, by pod UID and container ID.
    pub containers: Vec<ContainerFacts>,
}

impl Report {
    /// The part of the report that goes into `NodeVolumes.status.limits`: facts that rarely
    /// change, so the status is not rewritten on every scan.
    pub fn status(&self) -> NodeLimits {
        NodeLimits {
            vm_max_map_count: self.node.vm_max_map_count.unwrap_or_default(),
            swap_enabled: self.node.swap_enabled,
            runtime: self.node.runtime.as_ref().map(|r| RuntimeLimits {
                name: r.name.clone(),
                memlock_soft_bytes: r.memlock.soft,
                memlock_hard_bytes: r.memlock.hard,
                // NB: Linux never reports nofile as unlimited (fs.nr_open caps it).
                nofile_soft: r.nofile.soft.unwrap_or(u64::from(u32::MAX)),
                nofile_hard: r.nofile.hard.unwrap_or(u64::from(u32::MAX)),
                nproc_soft: r.nproc.soft,
                nproc_hard: r.nproc.hard,
            }),
        }
    }
}

/// One requirement of one container, checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementResult {
    /// `memlock`, `nofile`, `nproc` or `max-map-count`.
    pub requirement: String,
    /// `elasticsearch` (the profile) or the annotation that asked for it.
    pub source: String,
    /// At least this (`unlimited` or a number).
    pub required: String,
    /// What the container gets (its soft limit; the node's sysctl for max-map-count).
    pub actual: String,
    /// Whether the container gets at least what it needs.
    pub met: bool,
    /// When not met: what is wrong and how to fix it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}
