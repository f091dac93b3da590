//! Limits that workloads such as Elasticsearch depend on, read from the host's `/proc`:
//! node facts (`vm.max_map_count`, locked memory, swap, the container runtime daemon's rlimits,
//! which containers inherit) and, per container, its rlimits and locked memory, mapped to the
//! pod through `/proc/<pid>/cgroup`. Requirements (the `elasticsearch` profile, pod
//! annotations) are checked against them.
//!
//! ```text
//!  <host-root>/proc ─► collect ─► Report { node, containers (pod UID, container ID) }
//!  Pods on this node ─► PodIndex ─► name ─► requirements::check ─► CLI | metrics | Events | status.limits
//! ```

pub mod cli;
pub mod daemon;
pub mod metrics;
pub mod pods;
pub mod procfs;
pub mod requirements;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use volpool_api::{NodeLimits, RuntimeLimits};

use crate::host::Host;
use procfs::{Limit, PodContainer, Rlimits, kb_field, nul_separated, parse_cgroup, parse_limits};
pub use requirements::RequirementResult;

/// Runtime daemons by process name, in the order one is preferred when several run.
pub const RUNTIMES: &[&str] = &["crio", "containerd", "dockerd"];
/// What the command line of an Elasticsearch node holds.
const ELASTICSEARCH_MAIN: &str = "org.elasticsearch.bootstrap.Elasticsearch";
/// The most of a cmdline or environ read (Java command lines are long, not this long).
const MAX_ARGS: usize = 256 * 1024;

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

/// One process of a container.
struct Process {
    pid: u32,
    limits: Rlimits,
    locked: u64,
    elasticsearch: bool,
    memory_lock: bool,
}

fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// Read the node facts and every container's limits from `host`'s `/proc`. Processes that
/// vanish while being read are skipped. Names and requirements are filled in later.
pub fn collect(host: &dyn Host) -> Report {
    let pids: Vec<u32> = host
        .list_dir(Path::new("/proc"))
        .unwrap_or_default()
        .iter()
        .filter_map(|name| name.parse().ok())
        .collect();
    let mut runtime: Option<(usize, u32)> = None;
    let mut containers: BTreeMap<PodContainer, Vec<Process>> = BTreeMap::new();
    for &pid in &pids {
        if let Ok(comm) = host.read_to_string(&proc_path(pid, "comm"))
            && let Some(rank) = RUNTIMES.iter().position(|r| *r == comm.trim())
            && runtime.is_none_or(|(best, _)| rank < best)
        {
            runtime = Some((rank, pid));
        }
        let Some(ids) = host
            .read_to_string(&proc_path(pid, "cgroup"))
            .ok()
            .and_then(|text| parse_cgroup(&text))
        else {
            continue;
        };
        if let Some(process) = read_process(host, pid) {
            containers.entry(ids).or_default().push(process);
        }
    }
    let meminfo = host
        .read_to_string(Path::new("/proc/meminfo"))
        .unwrap_or_default();
    let node = NodeFacts {
        vm_max_map_count: host
            .read_to_string(Path::new("/proc/sys/vm/max_map_count"))
            .ok()
            .and_then(|s| s.trim().parse().ok()),
        mlocked_bytes: kb_field(&meminfo, "Mlocked"),
        unevictable_bytes: kb_field(&meminfo, "Unevictable"),
        swap_enabled: kb_field(&meminfo, "SwapTotal").is_some_and(|b| b > 0),
        runtime: runtime.and_then(|(rank, pid)| {
            let limits = read_limits(host, pid)?;
            Some(RuntimeFacts {
                name: RUNTIMES[rank].into(),
                pid,
                memlock: limits.memlock,
                nofile: limits.nofile,
                nproc: limits.nproc,
            })
        }),
    };
    let containers = containers
        .into_iter()
        .map(|(ids, processes)| container(ids, &processes))
        .collect();
    Report { node, containers }
}

fn read_limits(host: &dyn Host, pid: u32) -> Option<Rlimits> {
    let text = host.read_to_string(&proc_path(pid, "limits")).ok()?;
    match parse_limits(&text) {
        Ok(limits) => Some(limits),
        Err(e) => {
            tracing::warn!(pid, error = %e, "cannot read the process's limits");
            None
        }
    }
}

fn read_args(host: &dyn Host, pid: u32, file: &str) -> Vec<String> {
    host.read_at(&proc_path(pid, file), 0, MAX_ARGS)
        .map(|bytes| nul_separated(&bytes))
        .unwrap_or_default()
}

fn read_process(host: &dyn Host, pid: u32) -> Option<Process> {
    let limits = read_limits(host, pid)?;
    let status = host.read_to_string(&proc_path(pid, "status")).ok()?;
    let cmdline = read_args(host, pid, "cmdline");
    let elasticsearch = cmdline.iter().any(|a| a.contains(ELASTICSEARCH_MAIN));
    let memory_lock = elasticsearch
        && (cmdline.iter().any(|a| asks_memory_lock(a))
            || read_args(host, pid, "environ")
                .iter()
                .any(|v| asks_memory_lock(v)));
    Some(Process {
        pid,
        limits,
        locked: kb_field(&status, "VmLck").unwrap_or(0),
        elasticsearch,
        memory_lock,
    })
}

/// `-Ebootstrap.memory_lock=true`, the env `bootstrap.memory_lock=true` (the Docker image turns
/// it into `-E`), or `ES_SETTING_BOOTSTRAP_MEMORY__LOCK=true` (Elasticsearch 8).
fn asks_memory_lock(arg: &str) -> bool {
    let arg = arg.strip_prefix("-E").unwrap_or(arg);
    arg.eq_ignore_ascii_case("bootstrap.memory_lock=true")
        || arg.eq_ignore_ascii_case("ES_SETTING_BOOTSTRAP_MEMORY__LOCK=true")
}

/// A container from its processes: the limits of the Elasticsearch process if one runs, else
/// of the oldest (lowest pid: the container's init, with the limits it was started with).
fn container(ids: PodContainer, processes: &[Process]) -> ContainerFacts {
    let main = processes.iter().min_by_key(|p| (!p.elasticsearch, p.pid));
    let limits = main.map(|p| p.limits).unwrap_or_default();
    ContainerFacts {
        pod_uid: ids.pod_uid,
        container_id: ids.container_id,
        memlock: limits.memlock,
        nofile: limits.nofile,
        nproc: limits.nproc,
        locked_memory_bytes: processes.iter().map(|p| p.locked).sum(),
        elasticsearch: main.is_some_and(|p| p.elasticsearch),
        memory_lock_requested: main.is_some_and(|p| p.memory_lock),
        ..ContainerFacts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_lock_is_asked_for_on_the_command_line_or_in_the_environment() {
        assert!(asks_memory_lock("-Ebootstrap.memory_lock=true"));
        assert!(asks_memory_lock("bootstrap.memory_lock=true"));
        assert!(asks_memory_lock("ES_SETTING_BOOTSTRAP_MEMORY__LOCK=true"));
        assert!(!asks_memory_lock("-Ebootstrap.memory_lock=false"));
        assert!(!asks_memory_lock("-Xms1g"));
    }
}
