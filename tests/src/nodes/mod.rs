//! Real nodes: a cluster of its own with kubelets, containerd and kube-proxy
//! (`tests/cluster/up --nodes 2`), and volpool installed on it as users install it.
//!
//! ```text
//!  test ──► cluster() ──► tests/cluster/up --nodes 2   (once per run; $VOLPOOL_NODES_CLUSTER_DIR)
//!       ──► install() ──► deploy/images/build-local volpool ──► tests/cluster/node-load
//!                     ──► kubectl apply -k deploy/overlays/dev/      (once per image build)
//!       ──► Disk::mount(node, …) ──► tests/cluster/node-exec: loop-backed ext4 on the node
//!       ──► busybox pods with claims ──► kubelet ──► containerd ──► runc
//! ```
//!
//! The fake-node tests share the other cluster (`crate::kubeconfig`): there, the test plays the
//! kubelet, and an installed agent DaemonSet or controller Deployment would fight the tests' own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use volpool_testkit::stdout_of;

use crate::deploy::{AGENT, CONTROLLER, NAMESPACE, kubectl_path};
use crate::{repo_root, wait_for};

mod objects;
pub use objects::*;

/// The nodes `tests/cluster/up --nodes` starts for these tests: `node-1`, `node-2`.
pub const NODES: [&str; 2] = ["node-1", "node-2"];
/// A busybox image every node has (`deploy/images/build-local infra`).
pub const BUSYBOX: &str = "volpool.local/busybox:test";

/// State dir of the real-node cluster: `$VOLPOOL_NODES_CLUSTER_DIR`, else
/// `<tmp>/volpool-nodes-cluster`. `tests/run-all` brings it down at the end.
pub fn cluster_dir() -> PathBuf {
    std::env::var_os("VOLPOOL_NODES_CLUSTER_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("volpool-nodes-cluster"))
}

/// Run a script of `tests/cluster` (or the repo) with the real-node cluster's state dir, under
/// `flock` on `lock` so parallel test processes take turns; its stdout, or its stderr as error.
fn run_locked(lock: &Path, program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("flock")
        .arg("-o")
        .arg(lock)
        .arg(program)
        .args(args)
        .env("VOLPOOL_CLUSTER_DIR", cluster_dir())
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("failed to run {}", program.display()))?;
    stdout_of(
        &output,
        &format!("{} {}", program.display(), args.join(" ")),
    )
}

/// Kubeconfig of the real-node cluster, started at most once (the first test of a run waits
/// for `up --nodes 2`; the others find it running).
pub fn kubeconfig() -> anyhow::Result<PathBuf> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| {
        let lock = cluster_dir().with_extension("up.lock");
        let up = repo_root().join("tests/cluster/up");
        let nodes = NODES.len().to_string();
        run_locked(&lock, &up, &["--nodes", &nodes])
            .map(|_| cluster_dir().join("kubeconfig"))
            .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// A client of the real-node cluster (admin).
pub async fn client() -> anyhow::Result<Client> {
    let path = kubeconfig()?;
    let kubeconfig = Kubeconfig::read_from(&path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// kubectl (the server's version) against the real-node cluster; stdout, or an error with
/// stderr when it fails.
pub fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig()?)
        .args(args)
        .current_dir(repo_root())
        .output()
        .context("failed to run kubectl")?;
    stdout_of(&output, &format!("kubectl {}", args.join(" ")))
}

/// kubectl against the real-node cluster whatever its exit status (for commands whose status
/// carries a finding, like `volpool-agent limits`); its stdout.
pub fn kubectl_stdout(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig()?)
        .args(args)
        .output()
        .context("failed to run kubectl")?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The agent pod on `node`.
pub fn agent_on(node: &str) -> anyhow::Result<String> {
    let name = kubectl(&[
        "-n",
        NAMESPACE,
        "get",
        "pods",
        "-l",
        &format!("app.kubernetes.io/name={AGENT}"),
        "--field-selector",
        &format!("spec.nodeName={node}"),
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ])?;
    anyhow::ensure!(!name.is_empty(), "no agent pod on {node}");
    Ok(name)
}

/// `kubectl apply -f -` of a manifest.
pub fn apply(manifest: &str) -> anyhow::Result<()> {
    let mut child = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig()?)
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(manifest.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "kubectl apply failed: {}\n{manifest}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A shell script run on a node (`tests/cluster/node-exec <node> -- sh -c <script>`): what an
/// operator's shell on that node sees. Its stdout, or an error with its stderr.
pub fn node_exec(node: &str, script: &str) -> anyhow::Result<String> {
    let output = Command::new(repo_root().join("tests/cluster/node-exec"))
        .args([node, "--", "sh", "-c", script])
        .env("VOLPOOL_CLUSTER_DIR", cluster_dir())
        .output()
        .context("failed to run tests/cluster/node-exec")?;
    stdout_of(&output, &format!("on {node}: `{script}`"))
}

/// Build the `:dev` images from this workspace, import them into every node and install
/// volpool with `kubectl apply -k deploy/overlays/dev/`; then wait until the agent runs on
/// every node and a controller leads. Done once per image build: later calls find the same
/// images installed (a changed build restarts the agent and controller).
pub async fn install() -> anyhow::Result<()> {
    kubeconfig()?;
    let script = repo_root().join("tests/cluster/install-dev");
    let lock = cluster_dir().with_extension("install.lock");
    run_locked(&lock, &script, &[])?;
    let client = client().await?;
    agents_ready(&client).await?;
    controller_leader(&client).await?;
    Ok(())
}

/// Wait until the agent DaemonSet has a Ready pod on every node; returns the agent pods.
pub async fn agents_ready(client: &Client) -> anyhow::Result<Vec<Pod>> {
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for(
        "an agent pod Ready on every node",
        Duration::from_secs(120),
        || async {
            let set = sets.get(AGENT).await?;
            let status = set.status.unwrap_or_default();
            if status.desired_number_scheduled != NODES.len() as i32
                || status.number_ready != status.desired_number_scheduled
                || status.updated_number_scheduled != Some(status.desired_number_scheduled)
            {
                return Ok(None);
            }
            let list = pods
                .list(
                    &kube::api::ListParams::default()
                        .labels(&format!("app.kubernetes.io/name={AGENT}")),
                )
                .await?;
            let running: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            Ok((running.len() == NODES.len()).then_some(running))
        },
    )
    .await
}

/// Wait until the controller's Lease names a running controller pod; returns that pod's name.
pub async fn controller_leader(client: &Client) -> anyhow::Result<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for(
        "a running controller pod holding the Lease",
        Duration::from_secs(120),
        || async {
            let Some(lease) = leases.get_opt(CONTROLLER).await? else {
                return Ok(None);
            };
            let Some(holder) = lease.spec.and_then(|s| s.holder_identity) else {
                return Ok(None);
            };
            let running = pods
                .get_opt(&holder)
                .await?
                .is_some_and(|p| p.status.and_then(|s| s.phase).as_deref() == Some("Running"));
            Ok(running.then_some(holder))
        },
    )
    .await
}

/// A loop-backed ext4 disk mounted on a node at `<dir>/<name>` (in the node's own mount
/// namespace, as an operator would mount it). The image lives in the node's state dir, so
/// `tests/cluster/down` detaches it even when a test dies; dropping the disk unmounts it.
pub struct Disk {
    /// The node it is mounted on.
    pub node: String,
    /// Where, on that node.
    pub mountpoint: String,
}

impl Disk {
    /// Make a sparse ext4 image of `size` (e.g. "2G") and mount it with `-o loop`
    /// (autoclear: the loop device goes with the last mount).
    pub fn mount(node: &str, dir: &str, name: &str, size: &str) -> anyhow::Result<Disk> {
        let stem = format!("{}-{name}", dir.trim_matches('/').replace('/', "-"));
        let image = cluster_dir().join(format!("nodes/{node}/disks/{stem}.img"));
        let image = image.display();
        let mountpoint = format!("{dir}/{name}");
        node_exec(
            node,
            &format!(
                "truncate -s {size} {image} && mkfs.ext4 -q -F {image} && \
                 mkdir -p {mountpoint} && mount -o loop {image} {mountpoint}"
            ),
        )?;
        Ok(Disk {
            node: node.into(),
            mountpoint,
        })
    }

    /// Read a file on the disk, from the node.
    pub fn read(&self, file: &str) -> anyhow::Result<String> {
        node_exec(&self.node, &format!("cat {}/{file}", self.mountpoint))
    }

    /// The disk's top-level entries, from the node.
    pub fn list(&self) -> anyhow::Result<Vec<String>> {
        Ok(
            node_exec(&self.node, &format!("ls -A {}", self.mountpoint))?
                .lines()
                .map(str::to_owned)
                .collect(),
        )
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = node_exec(
            &self.node,
            &format!("umount {0} && rmdir {0}", self.mountpoint),
        );
    }
}

/// nfs-ganesha and rpcbind (`tests/nfs/serve`) in a node's network namespace, exporting
/// directories of the cluster dir on the node's address, so pods and agents on every node
/// reach it over the node bridge. Stopped (its process group) when dropped.
pub struct NfsServer {
    /// The node's address: the server to put in a pool.
    pub address: String,
    /// The exported directories.
    pub exports: Vec<String>,
    process: std::process::Child,
}

impl NfsServer {
    /// Export `count` fresh directories from `node`; wait until mountd and nfs are registered.
    pub async fn start(node: &str, count: usize) -> anyhow::Result<NfsServer> {
        use std::os::unix::process::CommandExt;
        let address = kubectl(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ])?;
        let state = cluster_dir().join(format!("nodes/{node}/nfs"));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(state.join("recov"))?;
        let mut conf = format!(
            "NFS_CORE_PARAM {{ Bind_addr = {address}; NFS_Port = 2049; MNT_Port = 20048;\n  \
             Enable_NLM = false; Enable_RQUOTA = false; Protocols = 3, 4; }}\n\
             NFSV4 {{ RecoveryBackend = fs; RecoveryRoot = {}; Graceless = true; UseGetpwnam = true; }}\n\
             NFS_KRB5 {{ Active_krb5 = false; }}\n",
            state.join("recov").display()
        );
        let mut exports = Vec::new();
        for id in 1..=count {
            let dir = state.join(format!("export{id}"));
            std::fs::create_dir_all(&dir)?;
            let dir = dir.display().to_string();
            conf.push_str(&format!(
                "EXPORT {{ Export_Id = {id}; Path = {dir}; Pseudo = {dir}; Access_Type = RW;\n  \
                 Squash = No_Root_Squash; SecType = sys; Protocols = 3, 4; Transports = TCP; \
                 FSAL {{ Name = VFS; }} }}\n"
            ));
            exports.push(dir);
        }
        std::fs::write(state.join("ganesha.conf"), conf)?;
        let log = std::fs::File::create(state.join("serve.log"))?;
        // NB: its own process group, so dropping it stops rpcbind and ganesha too; its own mount
        // namespace inside the node for the /run it mounts.
        let process = Command::new(repo_root().join("tests/cluster/node-exec"))
            .args([node, "--", "unshare", "--mount", "--propagation", "private"])
            .arg(repo_root().join("tests/nfs/serve"))
            .arg(&state)
            .env("VOLPOOL_CLUSTER_DIR", cluster_dir())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        let server = NfsServer {
            address,
            exports,
            process,
        };
        let probe = format!("rpcinfo -p {}", server.address);
        wait_for("the node's NFS server", Duration::from_secs(60), || async {
            let list = node_exec(node, &probe)?;
            Ok((list.contains("mountd") && list.contains("nfs")).then_some(()))
        })
        .await?;
        Ok(server)
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        let group = format!("-{}", self.process.id());
        for signal in ["-TERM", "-KILL"] {
            let _ = Command::new("kill").args([signal, "--", &group]).status();
            for _ in 0..50 {
                if self.process.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
