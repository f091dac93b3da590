//! Running the real `volpool-agent` on a fake node (the test kit's [`FakeNode`]: its own mount
//! and pid namespace, where its `/proc/1/mountinfo` is that node's mount table, and mounts
//! made with `nsenter` are its own), against the test cluster; and an apiserver relay whose
//! outage a test controls.
//!
//! ```text
//!  test ──► FakeNode::new() ──► unshare … (the node's namespace, gone with the test)
//!       ──► node.sh("mount …")  ──► nsenter -t <init> -m -p sh   (a disk appears on the node)
//!       ──► node.spawn_agent()  ──► nsenter … volpool-agent ──► kube-apiserver (NodeVolumes)
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use volpool_api::{
    ANNOTATION_VOLUME_ID, LABEL_HOSTNAME, LABEL_MANAGED_BY, LABEL_NODE, LABEL_POOL,
    LABEL_VOLUME_ID, MANAGED_BY, NodeVolumes, VolumeReport, volume_id_label,
};
use volpool_testkit::{FakeNode, cargo_binary};

use crate::{kubeconfig, wait_for};

/// The agent binary, built once per test process (a no-op when it is up to date).
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    cargo_binary("volpool-agent", "volpool-agent")
}

/// The log of the agent of Node `node` (stderr; made anew by each start), in
/// [`crate::cluster_files`].
pub fn agent_log(node: &str) -> PathBuf {
    crate::cluster_files().join(format!("volpool-agent-{node}.log"))
}

/// The entry at `path` in NodeVolumes/`node`, once one passes `check`: what an agent has
/// published about one volume.
pub async fn wait_for_entry(
    client: &Client,
    node: &str,
    path: &Path,
    what: &str,
    timeout: Duration,
    check: impl Fn(&VolumeReport) -> bool,
) -> anyhow::Result<VolumeReport> {
    let api: Api<NodeVolumes> = Api::all(client.clone());
    let path = path.to_string_lossy().into_owned();
    wait_for(&format!("{node}: {what}"), timeout, || async {
        let Some(nv) = api.get_opt(node).await? else {
            return Ok(None);
        };
        let entry = nv
            .status
            .unwrap_or_default()
            .volumes
            .into_iter()
            .find(|v| v.path == path);
        Ok(entry.filter(|v| check(v)))
    })
    .await
}

/// The real agent on a [`FakeNode`], against the test cluster: what this crate adds to the test
/// kit's type (an extension trait: every method but `fake_node` is provided).
pub trait AgentNode {
    /// The fake node the agent runs on.
    fn fake_node(&self) -> &FakeNode;

    /// Start the agent for Node `node` on this fake node, serving HTTP on
    /// 127.0.0.1:`port`. Extra arguments follow. It authenticates as the ServiceAccount
    /// `volpool-system/volpool-agent` with the RBAC of `deploy/`, as in a real install, so
    /// every agent feature an e2e test shows also works with least privilege.
    fn spawn_agent(
        &self,
        node: &str,
        port: u16,
        extra: &[&str],
    ) -> impl Future<Output = anyhow::Result<Child>> {
        async move {
            let kubeconfig =
                crate::deploy::service_account_kubeconfig(crate::deploy::AGENT).await?;
            self.spawn_agent_with(&kubeconfig, node, port, extra)
        }
    }

    /// [`AgentNode::spawn_agent`] with another kubeconfig (e.g. an [`ApiRelay`]'s).
    fn spawn_agent_with(
        &self,
        kubeconfig: &Path,
        node: &str,
        port: u16,
        extra: &[&str],
    ) -> anyhow::Result<Child> {
        let log = agent_log(node);
        let log = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        self.fake_node()
            .command(agent_binary()?)
            .args(["--host-root", "/", "--node-name", node])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("failed to start volpool-agent")
    }
}

impl AgentNode for FakeNode {
    fn fake_node(&self) -> &FakeNode {
        self
    }
}

/// Create PV `name` as the controller makes one for the volume `volume_id` at `path` of
/// `node` in `pool` (reclaim policy Delete), with a claimRef to a claim that does not exist,
/// and wait until the PV binder has released it: the PV of a scrub the agent may perform.
/// Returns its UID.
pub async fn create_released_pv(
    client: &Client,
    name: &str,
    node: &str,
    pool: &str,
    volume_id: &str,
    path: &Path,
) -> anyhow::Result<String> {
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "labels": {
                LABEL_MANAGED_BY: MANAGED_BY, LABEL_POOL: pool, LABEL_NODE: node,
                LABEL_VOLUME_ID: volume_id_label(volume_id),
            },
            "annotations": {ANNOTATION_VOLUME_ID: volume_id},
        },
        "spec": {
            "capacity": {"storage": "1Mi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": pool,
            "persistentVolumeReclaimPolicy": "Delete",
            "local": {"path": path.to_string_lossy()},
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default",
                         "name": format!("{name}-gone"), "uid": format!("{name}-claim-uid")},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": LABEL_HOSTNAME, "operator": "In", "values": [node]}]}]}},
        },
    }))?;
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let created = api.create(&PostParams::default(), &pv).await?;
    wait_for(
        &format!("PV {name} released by the PV binder"),
        Duration::from_secs(60),
        || async {
            let pv = api.get(name).await?;
            let phase = pv.status.and_then(|s| s.phase).unwrap_or_default();
            Ok(["Released", "Failed"]
                .contains(&phase.as_str())
                .then_some(()))
        },
    )
    .await?;
    Ok(created.metadata.uid.unwrap_or_default())
}

/// A TCP relay in front of the apiserver whose outage a test controls: while it is down,
/// every open connection is cut and new ones are closed at once, as when the apiserver
/// restarts. TLS passes through untouched.
pub struct ApiRelay {
    /// A kubeconfig that reaches the apiserver through the relay.
    pub kubeconfig: PathBuf,
    state: std::sync::Arc<RelayState>,
}

#[derive(Default)]
struct RelayState {
    down: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    open: std::sync::Mutex<Vec<std::net::TcpStream>>,
}

impl ApiRelay {
    /// Start relaying to the test cluster's apiserver; `dir` receives the kubeconfig.
    pub fn start(dir: &Path) -> anyhow::Result<ApiRelay> {
        let original = std::fs::read_to_string(kubeconfig()?)?;
        let mut config: serde_yaml::Value = serde_yaml::from_str(&original)?;
        let server = config["clusters"][0]["cluster"]["server"]
            .as_str()
            .context("kubeconfig has no clusters[0].cluster.server")?
            .to_string();
        let upstream = server
            .strip_prefix("https://")
            .context("apiserver URL is not https")?
            .to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        config["clusters"][0]["cluster"]["server"] =
            serde_yaml::Value::String(format!("https://127.0.0.1:{port}"));
        let path = dir.join("relay-kubeconfig");
        std::fs::write(&path, serde_yaml::to_string(&config)?)?;
        let state = std::sync::Arc::new(RelayState::default());
        let relay = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if relay.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                if relay.down.load(Ordering::Relaxed) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    let mut open = relay.open.lock().unwrap_or_else(|e| e.into_inner());
                    open.push(c);
                    open.push(s);
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Ok(ApiRelay {
            kubeconfig: path,
            state,
        })
    }

    /// Cut every connection and refuse new ones (`true`), or relay again (`false`).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::Relaxed);
        if down {
            let mut open = self.state.open.lock().unwrap_or_else(|e| e.into_inner());
            for stream in open.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for ApiRelay {
    fn drop(&mut self) {
        self.set_down(true);
        self.state.stop.store(true, Ordering::Relaxed);
    }
}

/// Copy `from` to `to` on a thread until either side closes.
fn pipe(from: &std::net::TcpStream, to: &std::net::TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    });
}
