//! `volpool-agent limits`: the node facts and every container's limits once, for people
//! (table) or programs (json, yaml). With `--node-name` and a reachable cluster, containers
//! are named from the Pods on that node; otherwise names are empty.
//! Exit status: 0 when every requirement is met, 1 when one is not.
//!
//! ```text
//!  --host-root ─► collect ─┐
//!  Pods (optional) ────────┴► name_and_check ─► render ─► stdout
//! ```

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use volpool_api::units::human_bytes;

use super::procfs::Limit;
use super::{Report, collect, pods};
use crate::error::{Error, Result};
use crate::host::RealHost;
use crate::output::{Format, columns, encode};

/// What `limits` was asked to do.
pub struct Limits {
    /// The node's root.
    pub host_root: PathBuf,
    /// Name the containers from this node's Pods (needs a cluster).
    pub node: Option<String>,
    /// Output format.
    pub output: Format,
}

/// Run `limits`; returns the text to print and the exit status.
pub fn run(args: Limits) -> Result<(String, i32)> {
    let mut report = collect(&RealHost::new(&args.host_root));
    let pods = match &args.node {
        Some(node) => list_pods(node).unwrap_or_else(|e| {
            eprintln!("warning: containers are not named: {e}");
            Vec::new()
        }),
        None => Vec::new(),
    };
    pods::name_and_check(&mut report, &pods);
    let unmet = report
        .containers
        .iter()
        .any(|c| c.requirements.iter().any(|r| !r.met));
    let text = encode(&report, args.output, table)
        .map_err(|(format, reason)| Error::EncodeReport { format, reason })?;
    Ok((text, i32::from(unmet)))
}

fn list_pods(node: &str) -> std::result::Result<Vec<Pod>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    runtime.block_on(async {
        let client = Client::try_default()
            .await
            .map_err(|e| format!("no cluster to ask: {e}"))?;
        let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let pods = Api::<Pod>::all(client).list(&params).await;
        pods.map(|list| list.items)
            .map_err(|e| format!("cannot list the Pods on node {node}: {e}"))
    })
}

fn limit(l: Limit, bytes: bool) -> String {
    let show = |v: Option<u64>| match v {
        None => "unlimited".to_string(),
        Some(v) if bytes => human_bytes(v),
        Some(v) => v.to_string(),
    };
    format!("{}/{}", show(l.soft), show(l.hard))
}

fn table(report: &Report) -> String {
    let node = &report.node;
    let opt = |v: Option<u64>, bytes: bool| match v {
        None => "-".to_string(),
        Some(v) if bytes => human_bytes(v),
        Some(v) => v.to_string(),
    };
    let mut out = format!(
        "vm.max_map_count: {}\nlocked memory: {} (unevictable {})\nswap: {}\n",
        opt(node.vm_max_map_count, false),
        opt(node.mlocked_bytes, true),
        opt(node.unevictable_bytes, true),
        if node.swap_enabled { "on" } else { "off" },
    );
    match &node.runtime {
        Some(r) => out.push_str(&format!(
            "runtime: {} (pid {}) memlock {} nofile {} nproc {} (soft/hard)\n",
            r.name,
            r.pid,
            limit(r.memlock, true),
            limit(r.nofile, false),
            limit(r.nproc, false)
        )),
        None => out.push_str("runtime: none found (containerd, crio, dockerd)\n"),
    }
    out.push('\n');
    let mut rows = vec![
        [
            "NAMESPACE",
            "POD",
            "CONTAINER",
            "POD UID",
            "CONTAINER ID",
            "MEMLOCK",
            "NOFILE",
            "NPROC",
            "LOCKED",
            "UNMET",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    for c in &report.containers {
        let unmet: Vec<&str> = c
            .requirements
            .iter()
            .filter(|r| !r.met)
            .map(|r| r.requirement.as_str())
            .collect();
        rows.push(vec![
            dash(&c.namespace),
            dash(&c.pod),
            dash(&c.container),
            c.pod_uid.clone(),
            c.container_id.chars().take(13).collect(),
            limit(c.memlock, true),
            limit(c.nofile, false),
            limit(c.nproc, false),
            human_bytes(c.locked_memory_bytes),
            if unmet.is_empty() {
                "-".into()
            } else {
                unmet.join(",")
            },
        ]);
    }
    out.push_str(&columns(&rows));
    if report.containers.is_empty() {
        out.push_str("(no containers: no process is in a pod's cgroup)\n");
    }
    for c in &report.containers {
        for r in c.requirements.iter().filter(|r| !r.met) {
            out.push_str(&format!(
                "\n{}/{} {}: {}\n",
                dash(&c.pod),
                dash(&c.container),
                r.requirement,
                r.message
            ));
        }
    }
    out
}
