//! `volpool-agent check-nfs` against real components: a debootstrapped Debian root as the host
//! (the installer puts nfs-common into it with apt), nfs-ganesha in a network namespace as the
//! NFS server, and this machine's kernel (which has no NFS client).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use volpool_api::{
    CheckStatus, LABEL_HOSTNAME, LABEL_NFS_CLIENT, NfsClientStatus, NodeVolumes, VolumePool,
};
use volpool_e2e::agent::agent_binary;
use volpool_e2e::nfs::{HostRoot, NfsServer, output_within};
use volpool_e2e::{apply_crds, client, create_node, unique, wait_for};
use volpool_testkit::agent::{check_of, json_report, message_of};
use volpool_testkit::{TempDir, free_port, http_get};

/// Generous: an install downloads and unpacks ~30 packages on a shared 2-core machine.
const INSTALL_DEADLINE: Duration = Duration::from_secs(900);
const CHECK_DEADLINE: Duration = Duration::from_secs(120);

fn json(out: &Output) -> Value {
    json_report(out, "check-nfs")
}

fn server<'a>(report: &'a Value, pool: &str) -> &'a Value {
    report["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["pool"] == pool))
        .unwrap_or_else(|| panic!("no server entry for pool {pool} in {report:#}"))
}

/// The message of the pool's server entry, which must say it is not reachable.
fn unreachable<'a>(report: &'a Value, pool: &str) -> &'a str {
    let s = server(report, pool);
    assert_eq!(s["reachable"], false, "{s:#}");
    s["message"].as_str().unwrap_or_default()
}

fn nfs_pool(name: &str, server: &str, path: &str, options: &str) -> String {
    format!(
        "apiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {{name: {name}}}\nspec:\n  storageClassName: {name}\n  mountOptions: [{options}]\n  nfs: {{server: '{server}', path: '{path}'}}\n---\n"
    )
}

/// What the pools-file tests start from: nfs-ganesha exporting `<temp dir>/export`, and a
/// pools file beside it.
struct Served {
    nfs: NfsServer,
    /// The exported directory.
    export: String,
    /// The pools file.
    pools: PathBuf,
    _dir: TempDir,
}

/// [`Served`] in a temp dir named `name`, its pools file `pools(server address, export)`.
fn served(name: &str, pools: impl Fn(&str, &str) -> String) -> Served {
    let dir = TempDir::new(name).expect("temp dir");
    let export = dir.join("export");
    let nfs = NfsServer::start(&[&export]).expect("nfs-ganesha");
    let export = export.to_string_lossy().into_owned();
    let file = dir.join("pools.yaml");
    std::fs::write(&file, pools(nfs.address(), &export)).expect("pools file");
    Served {
        nfs,
        export,
        pools: file,
        _dir: dir,
    }
}

fn check_nfs(cmd: &mut Command) -> Output {
    output_within(cmd, CHECK_DEADLINE).expect("check-nfs finishes")
}

#[test]
fn a_bare_debian_host_is_reported_then_gets_nfs_common_installed() {
    let agent = agent_binary().expect("agent binary");
    let host = HostRoot::fresh().expect("debootstrapped host root");
    let root = host.path();

    let before = check_nfs(
        host.command(&agent)
            .args(["check-nfs", "-o", "json", "--host-root"])
            .arg(root),
    );
    assert_eq!(before.status.code(), Some(1), "not ready exits 1");
    let report = json(&before);
    let message = message_of(&report, "mount-helper", "NonOK");
    assert!(message.contains("no mount.nfs"), "{message}");
    let message = message_of(&report, "package", "NonOK");
    assert!(message.contains("nfs-common is not installed"), "{message}");
    assert_eq!(report["ready"], false);

    let install = output_within(
        host.command(&agent)
            .args(["check-nfs", "-o", "json", "--install", "--host-root"])
            .arg(root),
        INSTALL_DEADLINE,
    )
    .expect("install finishes");
    let report = json(&install);
    assert!(report.get("installError").is_none(), "{report:#}");
    let commands: Vec<&str> = report["install"]
        .as_array()
        .expect("install steps")
        .iter()
        .filter_map(|s| s["command"].as_str())
        .collect();
    assert_eq!(
        commands,
        [
            "apt-get -o DPkg::Lock::Timeout=60 update",
            "apt-get install -y -o DPkg::Lock::Timeout=60 nfs-common"
        ]
    );
    assert!(
        report["install"][1]["output"]
            .as_str()
            .is_some_and(|o| o.contains("Setting up nfs-common")),
        "apt's output is kept: {report:#}"
    );
    assert_eq!(check_of(&report, "mount-helper").0, "OK", "{report:#}");
    let message = message_of(&report, "package", "OK");
    assert!(message.contains("nfs-common") && message.contains("is installed"));
    assert!(root.join("sbin/mount.nfs").exists());
    // The kernel of this machine still has no NFS: installing software does not make it ready.
    assert_eq!(check_of(&report, "kernel").0, "NonOK");
    assert_eq!(report["ready"], false);

    // A second run has nothing to install.
    let again = json(&check_nfs(
        host.command(&agent)
            .args(["check-nfs", "-o", "json", "--install", "--host-root"])
            .arg(root),
    ));
    assert!(again.get("install").is_none(), "{again:#}");
}

#[test]
fn on_this_kernel_the_kernel_check_says_what_is_missing() {
    let agent = agent_binary().expect("agent binary");
    let out = check_nfs(Command::new(&agent).args(["check-nfs", "--host-root", "/"]));
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no kernel row:\n{table}"));
    assert!(line.contains("NonOK"), "{line}");
    assert!(line.contains("nfs is not in /proc/filesystems"), "{line}");
    assert!(line.contains("/sys/module/nfs does not exist"), "{line}");
    assert!(table.contains("NFS client ready: no"), "{table}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn exports_are_listed_and_a_path_not_exported_is_reported() {
    let agent = agent_binary().expect("agent binary");
    let bed = served("volpool-nfs-export", |address, export| {
        [
            nfs_pool("shared", address, export, ""),
            nfs_pool(
                "below",
                address,
                &format!("{export}/team-a"),
                "nfsvers=3,nolock",
            ),
            nfs_pool("elsewhere", address, "/srv/not-exported", ""),
            nfs_pool("v4", address, export, "nfsvers=4.1"),
        ]
        .concat()
    });
    let (export, pools) = (&bed.export, &bed.pools);

    let report = json(&check_nfs(
        Command::new(&agent)
            .args(["check-nfs", "-o", "json", "--pools-file"])
            .arg(pools),
    ));
    // NFSv4 has no export list to read: reachable means the server answered an NFS v4 call.
    let v4 = server(&report, "v4");
    assert_eq!(v4["reachable"], true, "{v4:#}");
    for pool in ["shared", "below"] {
        let s = server(&report, pool);
        assert_eq!(s["reachable"], true, "{s:#}");
        assert_eq!(s["exports"], serde_json::json!([export]), "{s:#}");
    }
    let message = unreachable(&report, "elsewhere");
    assert!(
        message.contains("/srv/not-exported is not exported by")
            && message.contains(&format!("it exports: {export}")),
        "{message}"
    );
}

#[test]
fn a_stopped_or_hung_server_fails_within_the_deadline_with_the_real_error() {
    let agent = agent_binary().expect("agent binary");
    let bed = served("volpool-nfs-down", |address, export| {
        nfs_pool("shared", address, export, "")
    });
    let (nfs, pools) = (&bed.nfs, &bed.pools);
    let probe = |pools: &Path| {
        json(&check_nfs(
            Command::new(&agent)
                .args([
                    "check-nfs",
                    "-o",
                    "json",
                    "--nfs-timeout",
                    "2s",
                    "--pools-file",
                ])
                .arg(pools),
        ))
    };

    nfs.freeze().expect("freeze");
    let report = probe(pools);
    let message = unreachable(&report, "shared");
    assert!(
        message.contains(&format!(
            "{}:111 (portmapper): no answer within 2s",
            nfs.address()
        )),
        "{message}"
    );

    nfs.thaw().expect("thaw");
    assert_eq!(server(&probe(pools), "shared")["reachable"], true);

    nfs.stop().expect("stop");
    let report = probe(pools);
    let message = unreachable(&report, "shared");
    assert!(
        message.contains(&format!("{}:2049 (nfs)", nfs.address())) && message.contains("refused"),
        "{message}"
    );
}

#[test]
fn nfsv3_with_locking_needs_statd_registered_with_the_hosts_portmapper() {
    let agent = agent_binary().expect("agent binary");
    let bed = served("volpool-nfs-statd", |address, export| {
        nfs_pool("locked", address, export, "nfsvers=3")
    });
    // Inside the server's namespace, 127.0.0.1:111 is a real rpcbind without rpc.statd.
    let report = json(&check_nfs(
        bed.nfs
            .in_netns(&agent)
            .args(["check-nfs", "-o", "json", "--pools-file"])
            .arg(&bed.pools),
    ));
    let message = message_of(&report, "rpc-statd", "NonOK");
    assert!(
        message.contains("rpc.statd is not registered with rpcbind on 127.0.0.1:111"),
        "{message}"
    );
    assert_eq!(server(&report, "locked")["reachable"], true, "{report:#}");
}

/// The agent daemon for one node, killed on drop.
struct Agent(std::process::Child);

impl Agent {
    /// Start `agent` (the binary, maybe inside a host root's namespaces) as the daemon of
    /// `node` on `root`, with `extra` flags, serving HTTP on 127.0.0.1:`port`; its log in `log`.
    fn start(
        mut agent: Command,
        root: &Path,
        node: &str,
        extra: &[&str],
        port: u16,
        log: std::fs::File,
    ) -> anyhow::Result<Agent> {
        let child = agent
            .arg("--host-root")
            .arg(root)
            .args(["--node-name", node])
            .args(extra)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", volpool_e2e::kubeconfig()?)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Agent(child))
    }
}

/// Wait until NodeVolumes/`node` has a `status.nfsClient` that passes `check`; that status.
async fn nfs_client_where(
    client: &Client,
    node: &str,
    what: &str,
    check: impl Fn(&NfsClientStatus) -> bool,
) -> anyhow::Result<NfsClientStatus> {
    let reports: Api<NodeVolumes> = Api::all(client.clone());
    let what = format!("status.nfsClient {what}");
    wait_for(&what, Duration::from_secs(120), || async {
        let nv = reports.get_opt(node).await?;
        let nfs_client = nv.and_then(|nv| nv.status).and_then(|s| s.nfs_client);
        Ok(nfs_client.filter(|c| check(c)))
    })
    .await
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A host root whose checks all pass (the `debian-ready` fixture plus this machine's mount
/// table), so the label can be seen turning `ready`, then `missing` when mount.nfs goes.
fn ready_host_root(dir: &TempDir) -> std::path::PathBuf {
    let root = dir.join("host");
    let fixture = volpool_e2e::repo_root().join("agent/testdata/nfs/hosts/debian-ready");
    std::fs::create_dir_all(&root).expect("host root");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(fixture.join("."))
        .arg(&root)
        .status()
        .expect("cp");
    assert!(copied.success());
    std::fs::create_dir_all(root.join("proc/1")).expect("proc/1");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    std::fs::write(root.join("proc/1/mountinfo"), mountinfo).expect("mountinfo copy");
    root
}

#[tokio::test]
async fn the_agent_labels_its_node_and_publishes_the_nfs_client_status() -> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    let node = unique("nfs-node");
    create_node(&client, &node).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"volpool-e2e/nfs-node": node}}}),
            ),
        )
        .await?;

    let dir = TempDir::new("volpool-nfs-agent")?;
    let export = dir.join("export");
    let nfs = NfsServer::start(&[&export])?;
    let pool_name = unique("nfs-pool");
    let pool: VolumePool = serde_yaml::from_str(&format!(
        "apiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {{name: {pool_name}}}\nspec:\n  storageClassName: {pool_name}\n  nodeSelector: {{matchLabels: {{volpool-e2e/nfs-node: {node}}}}}\n  nfs: {{server: '{}', path: '{}'}}\n",
        nfs.address(),
        export.display()
    ))?;
    let pools: Api<VolumePool> = Api::all(client.clone());
    pools.create(&PostParams::default(), &pool).await?;

    let root = ready_host_root(&dir);
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("agent.log"))?;
    let agent = Command::new(agent_binary()?);
    let _agent = Agent::start(agent, &root, &node, &["--resync", "1s"], port, log)?;

    let label = |want: &'static str| {
        let nodes = nodes.clone();
        let node = node.clone();
        async move {
            let n = nodes.get(&node).await?;
            let labels = n.metadata.labels.unwrap_or_default();
            Ok((labels.get(LABEL_NFS_CLIENT).map(String::as_str) == Some(want)).then_some(labels))
        }
    };
    let labels = wait_for(
        "the node labelled nfs-client=ready",
        Duration::from_secs(120),
        || label("ready"),
    )
    .await?;
    assert_eq!(labels.get(LABEL_HOSTNAME), Some(&node), "other labels stay");
    assert_eq!(labels.get("volpool-e2e/nfs-node"), Some(&node));

    let status = nfs_client_where(&client, &node, "with the pool's server", |c| {
        c.servers.iter().any(|s| s.pool == pool_name && s.reachable)
    })
    .await?;
    assert!(status.ready, "{status:?}");
    let server = status
        .servers
        .iter()
        .find(|s| s.pool == pool_name)
        .expect("server");
    assert_eq!(server.server, nfs.address());
    assert_eq!(server.exports, [export.display().to_string()]);
    let (_, metrics) = http_get(port, "/metrics")?;
    assert!(metrics.contains("volpool_nfs_client_ready 1"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "volpool_nfs_server_reachable{{pool=\"{pool_name}\",server=\"{}\"}} 1",
            nfs.address()
        )),
        "{metrics}"
    );

    // The helper goes away: the node is relabelled and the report says why.
    std::fs::remove_file(root.join("usr/sbin/mount.nfs"))?;
    wait_for(
        "the node labelled nfs-client=missing",
        Duration::from_secs(120),
        || label("missing"),
    )
    .await?;
    let status = nfs_client_where(&client, &node, "not ready", |c| !c.ready).await?;
    let helper = status
        .checks
        .iter()
        .find(|c| c.name == "mount-helper")
        .expect("mount-helper check");
    assert_eq!(helper.status, volpool_api::CheckStatus::NonOK, "{helper:?}");
    let (_, metrics) = http_get(port, "/metrics")?;
    assert!(
        metrics.contains("volpool_nfs_client_check{check=\"mount-helper\"} 0"),
        "{metrics}"
    );

    pools.delete(&pool_name, &DeleteParams::default()).await?;
    nodes.delete(&node, &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test]
async fn the_daemon_installs_the_client_when_allowed_and_records_an_event() -> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    let node = unique("nfs-install-node");
    create_node(&client, &node).await?;
    let host = HostRoot::fresh()?;
    let root = host.path().to_path_buf();
    let log = std::fs::File::create(root.join("../agent.log"))?;
    let extra = ["--install-nfs-client", "--resync", "2s"];
    let agent = host.command(agent_binary()?);
    let _agent = Agent::start(agent, &root, &node, &extra, free_port()?, log)?;

    let events: Api<Event> = Api::namespaced(client.clone(), "kube-system");
    let event = wait_for("an install Event on the node", INSTALL_DEADLINE, || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .into_iter()
            .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node.as_str())))
    })
    .await?;
    assert_eq!(
        event.reason.as_deref(),
        Some("NfsClientInstalled"),
        "{event:?}"
    );
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert!(
        event
            .note
            .as_deref()
            .is_some_and(|n| n.contains("nfs-common")),
        "the note holds apt's output: {event:?}"
    );
    assert!(root.join("sbin/mount.nfs").exists());

    let status = nfs_client_where(&client, &node, "after the install", |c| {
        c.checks
            .iter()
            .any(|c| c.name == "mount-helper" && c.status == CheckStatus::OK)
    })
    .await?;
    let package = status
        .checks
        .iter()
        .find(|c| c.name == "package")
        .expect("package");
    assert_eq!(package.status, CheckStatus::OK, "{package:?}");
    // This machine's kernel has no NFS client, so the node stays `missing`.
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = nodes.get(&node).await?.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get(LABEL_NFS_CLIENT).map(String::as_str),
        Some("missing")
    );
    nodes.delete(&node, &DeleteParams::default()).await?;
    Ok(())
}
