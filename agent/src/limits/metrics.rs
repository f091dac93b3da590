//! The limits families as Prometheus text, rendered once per limits scan and served as is.
//! Containers without names (no cluster to ask) have no series: their labels would collide.
//!
//! ```text
//!  Report ─► render ─► volpool_sysctl_vm_max_map_count, volpool_node_locked_memory_bytes,
//!                      volpool_runtime_limit, volpool_container_limit,
//!                      volpool_container_locked_memory_bytes, volpool_workload_requirement_met
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::Report;
use super::procfs::Limit;
use crate::metrics::escape;

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn value(v: Option<u64>) -> String {
    v.map_or_else(|| "+Inf".into(), |v| v.to_string())
}

/// `resource="…",kind="soft|hard"` samples of three limits, after `prefix` labels.
fn limit_samples(out: &mut String, name: &str, prefix: &str, limits: [(&str, Limit); 3]) {
    for (resource, limit) in limits {
        for (kind, v) in [("soft", limit.soft), ("hard", limit.hard)] {
            let _ = writeln!(
                out,
                "{name}{{{prefix}resource=\"{resource}\",kind=\"{kind}\"}} {}",
                value(v)
            );
        }
    }
}

/// The limits families of `report`.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(2048 + report.containers.len() * 1024);
    let node = &report.node;
    if let Some(v) = node.vm_max_map_count {
        header(
            &mut out,
            "volpool_sysctl_vm_max_map_count",
            "The node's vm.max_map_count (Elasticsearch needs at least 262144).",
        );
        let _ = writeln!(out, "volpool_sysctl_vm_max_map_count {v}");
    }
    if let Some(v) = node.mlocked_bytes {
        header(
            &mut out,
            "volpool_node_locked_memory_bytes",
            "Memory locked on the node (Mlocked of /proc/meminfo), bytes.",
        );
        let _ = writeln!(out, "volpool_node_locked_memory_bytes {v}");
    }
    if let Some(r) = &node.runtime {
        let name = "volpool_runtime_limit";
        header(
            &mut out,
            name,
            "Limits of the container runtime daemon, which containers inherit (+Inf = unlimited).",
        );
        let prefix = format!("runtime=\"{}\",", escape(&r.name));
        limit_samples(
            &mut out,
            name,
            &prefix,
            [
                ("memlock", r.memlock),
                ("nofile", r.nofile),
                ("nproc", r.nproc),
            ],
        );
    }
    let mut seen = BTreeSet::new();
    let named: Vec<_> = report
        .containers
        .iter()
        .filter(|c| !c.pod.is_empty() && !c.container.is_empty())
        // NB: a restarted container's old processes may linger for a moment; first wins.
        .filter(|c| seen.insert((c.namespace.clone(), c.pod.clone(), c.container.clone())))
        .map(|c| {
            let labels = format!(
                "namespace=\"{}\",pod=\"{}\",container=\"{}\"",
                escape(&c.namespace),
                escape(&c.pod),
                escape(&c.container)
            );
            (c, labels)
        })
        .collect();
    let name = "volpool_container_limit";
    header(
        &mut out,
        name,
        "Limits of a container's main process (+Inf = unlimited).",
    );
    for (c, labels) in &named {
        let prefix = format!("{labels},");
        limit_samples(
            &mut out,
            name,
            &prefix,
            [
                ("memlock", c.memlock),
                ("nofile", c.nofile),
                ("nproc", c.nproc),
            ],
        );
    }
    let name = "volpool_container_locked_memory_bytes";
    header(
        &mut out,
        name,
        "Memory a container's processes have locked (VmLck), bytes.",
    );
    for (c, labels) in &named {
        let _ = writeln!(out, "{name}{{{labels}}} {}", c.locked_memory_bytes);
    }
    let name = "volpool_workload_requirement_met";
    header(
        &mut out,
        name,
        "1 when the container gets what its profile or annotations require, else 0.",
    );
    for (c, labels) in &named {
        for r in &c.requirements {
            let _ = writeln!(
                out,
                "{name}{{{labels},requirement=\"{}\"}} {}",
                escape(&r.requirement),
                u8::from(r.met)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{ContainerFacts, NodeFacts, RequirementResult, RuntimeFacts};
    use super::*;

    #[test]
    fn unlimited_is_inf_and_nameless_containers_have_no_series() {
        let unlimited = Limit::default();
        let report = Report {
            node: NodeFacts {
                vm_max_map_count: Some(65_530),
                mlocked_bytes: Some(4096),
                runtime: Some(RuntimeFacts {
                    name: "containerd".into(),
                    pid: 7,
                    memlock: Limit {
                        soft: Some(8 << 20),
                        hard: Some(8 << 20),
                    },
                    nofile: unlimited,
                    nproc: unlimited,
                }),
                ..NodeFacts::default()
            },
            containers: vec![
                ContainerFacts {
                    namespace: "search".into(),
                    pod: "es-0".into(),
                    container: "elasticsearch".into(),
                    locked_memory_bytes: 1 << 20,
                    requirements: vec![RequirementResult {
                        requirement: "memlock".into(),
                        source: "elasticsearch".into(),
                        required: "unlimited".into(),
                        actual: "65536".into(),
                        met: false,
                        message: String::new(),
                    }],
                    ..ContainerFacts::default()
                },
                ContainerFacts {
                    pod_uid: "u".into(),
                    container_id: "c".into(),
                    ..ContainerFacts::default()
                },
            ],
        };
        let text = render(&report);
        for line in [
            "volpool_sysctl_vm_max_map_count 65530\n",
            "volpool_node_locked_memory_bytes 4096\n",
            "volpool_runtime_limit{runtime=\"containerd\",resource=\"memlock\",kind=\"hard\"} 8388608\n",
            "volpool_runtime_limit{runtime=\"containerd\",resource=\"nproc\",kind=\"soft\"} +Inf\n",
            "volpool_container_limit{namespace=\"search\",pod=\"es-0\",container=\"elasticsearch\",resource=\"nofile\",kind=\"soft\"} +Inf\n",
            "volpool_container_locked_memory_bytes{namespace=\"search\",pod=\"es-0\",container=\"elasticsearch\"} 1048576\n",
            "volpool_workload_requirement_met{namespace=\"search\",pod=\"es-0\",container=\"elasticsearch\",requirement=\"memlock\"} 0\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert_eq!(
            text.matches("volpool_container_limit{").count(),
            6,
            "{text}"
        );
    }
}
