//! Harnesses for end-to-end tests against real components.
//!
//! ```text
//!  test ──► cluster() ──► $KUBECONFIG, or tests/cluster/up (once per run, under a file lock)
//!       ──► client() / create_node() / apply_crds() / unique() ──► kube-apiserver v1.20.2
//! ```
//!
//! Every test gets its own names from [`unique`], so tests run in parallel without colliding.

pub mod agent;
pub mod chaos;
pub mod controller;
pub mod deploy;
pub mod disks;
pub mod nfs;
pub mod nodes;
pub mod pool;
pub mod prometheus;

pub use volpool_testkit::{repo_root, wait_for};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use volpool_testkit::stdout_of;

/// Field manager of everything the tests write.
pub const FIELD_MANAGER: &str = "volpool-e2e";

/// Path of the kubeconfig of the test cluster: `$KUBECONFIG` when set, else the local control
/// plane from `tests/cluster/up`, started at most once for all test processes of a run.
pub fn kubeconfig() -> anyhow::Result<PathBuf> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| start_cluster().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn start_cluster() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let up = repo_root().join("tests/cluster/up");
    // NB: nextest runs each test in its own process; the lock makes them share one cluster.
    // NB: -o, or the control plane's daemons inherit the lock's fd and hold it forever.
    let output = Command::new("flock")
        .arg("-o")
        .arg(std::env::temp_dir().join("volpool-cluster-up.lock"))
        .arg(&up)
        .output()
        .with_context(|| format!("failed to run {}", up.display()))?;
    let stdout = stdout_of(&output, &up.display().to_string())?;
    let path = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export KUBECONFIG="))
        .next_back()
        .context("tests/cluster/up did not print `export KUBECONFIG=<path>`")?;
    Ok(PathBuf::from(path.trim()))
}

/// Where the tests keep files that belong to the test cluster: the logs of the agents and
/// controllers they start, and the service accounts' kubeconfigs. For a cluster
/// `tests/cluster/up` made it is `<cluster dir>/tests`, so the files stay for a look while the
/// cluster runs and go with it (`tests/cluster/down` removes the dir); for any other cluster, the
/// temp dir.
pub fn cluster_files() -> PathBuf {
    let made_by_up = kubeconfig()
        .ok()
        .and_then(|k| k.parent().map(Path::to_path_buf))
        .filter(|dir| dir.join(".volpool-cluster").exists());
    match made_by_up {
        Some(dir) if std::fs::create_dir_all(dir.join("tests")).is_ok() => dir.join("tests"),
        _ => std::env::temp_dir(),
    }
}

/// A client for the test cluster (a new one per test: each test has its own runtime).
pub async fn client() -> anyhow::Result<Client> {
    client_of(&kubeconfig()?).await
}

/// A client that acts as the kubeconfig at `path` says (e.g. a ServiceAccount's).
pub async fn client_of(path: &std::path::Path) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("failed to read kubeconfig {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A DNS-1123 name unique to this test process and call: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Install (server-side apply) volpool's CRDs from `deploy/crds/` and wait until they are
/// Established.
pub async fn apply_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in [
        volpool_api::crd::volume_pool(),
        volpool_api::crd::node_volumes(),
    ] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("failed to apply CRD {name}"))?;
        wait_for(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || async {
                let crd = api.get(&name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// Create a Node object that the scheduler will use: `kubernetes.io/hostname` label, no
/// `not-ready` taint, a `Ready` condition and allocatable resources. There is no kubelet, so
/// the test plays its part.
pub async fn create_node(client: &Client, name: &str) -> anyhow::Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {volpool_api::LABEL_HOSTNAME: name}},
        "spec": {"taints": []},
    });
    nodes
        .patch(name, &params, &Patch::Apply(&node))
        .await
        .with_context(|| format!("failed to create Node {name}"))?;
    // NB: admission adds the not-ready taint on create; with the lifecycle controller off,
    // nothing else removes it.
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "volpool e2e node", "lastHeartbeatTime": now,
                        "lastTransitionTime": now}],
        "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
    }});
    Ok(nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?)
}
