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
pub mod facts;
pub mod metrics;
pub mod pods;
pub mod procfs;
pub mod requirements;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::host::Host;
pub use facts::{ContainerFacts, NodeFacts, Report, RequirementResult, RuntimeFacts};
use procfs::{PodContainer, Rlimits, kb_field, nul_separated, parse_cgroup, parse_limits};

/// Runtime daemons by process name, in the order one is preferred when several run.
pub const RUNTIMES: &[&str] = &["crio", "containerd", "dockerd"];
/// What the command line of an Elasticsearch node holds.
const ELASTICSEARCH_MAIN: &str = "org.elasticsearch.bootstrap.Elasticsearch";
/// The most of a cmdline or environ read (Java command lines are long, not this long).
const MAX_ARGS: usize = 256 * 1024;

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
