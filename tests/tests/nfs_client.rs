//! `volpool-agent check-nfs` against real components: a debootstrapped Debian root as the host
//! (the installer puts nfs-common into it with apt), nfs-ganesha in a network namespace as the
//! NFS server, and this machine's kernel (which has no NFS client).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use volpool_e2e::agent::{TempDir, agent_binary};
use volpool_e2e::nfs::{HostRoot, NfsServer, output_within};
use volpool_e2e::unique;

/// Generous: an install downloads and unpacks ~30 packages on a shared 2-core machine.
const INSTALL_DEADLINE: Duration = Duration::from_secs(900);
const CHECK_DEADLINE: Duration = Duration::from_secs(120);

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check-nfs printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn check<'a>(report: &'a Value, name: &str) -> (&'a str, &'a str) {
    let c = report["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"));
    (
        c["status"].as_str().unwrap_or_default(),
        c["message"].as_str().unwrap_or_default(),
    )
}

fn server<'a>(report: &'a Value, pool: &str) -> &'a Value {
    report["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["pool"] == pool))
        .unwrap_or_else(|| panic!("no server entry for pool {pool} in {report:#}"))
}

fn nfs_pool(name: &str, server: &str, path: &str, options: &str) -> String {
    format!(
        "apiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {{name: {name}}}\nspec:\n  storageClassName: {name}\n  mountOptions: [{options}]\n  nfs: {{server: '{server}', path: '{path}'}}\n---\n"
    )
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
    let (status, message) = check(&report, "mount-helper");
    assert_eq!(status, "NonOK");
    assert!(message.contains("no mount.nfs"), "{message}");
    let (status, message) = check(&report, "package");
    assert_eq!(status, "NonOK");
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
    assert_eq!(check(&report, "mount-helper").0, "OK", "{report:#}");
    let (status, message) = check(&report, "package");
    assert_eq!(status, "OK");
    assert!(message.contains("nfs-common") && message.contains("is installed"));
    assert!(root.join("sbin/mount.nfs").exists());
    // The kernel of this machine still has no NFS: installing software does not make it ready.
    assert_eq!(check(&report, "kernel").0, "NonOK");
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
    let dir = TempDir::new(&unique("volpool-nfs-export")).expect("temp dir");
    let export = dir.join("export");
    let nfs = NfsServer::start(&[&export]).expect("nfs-ganesha");
    let export = export.to_string_lossy().into_owned();
    let pools = dir.join("pools.yaml");
    let yaml = [
        nfs_pool("shared", nfs.address(), &export, ""),
        nfs_pool(
            "below",
            nfs.address(),
            &format!("{export}/team-a"),
            "nfsvers=3,nolock",
        ),
        nfs_pool("elsewhere", nfs.address(), "/srv/not-exported", ""),
    ]
    .concat();
    std::fs::write(&pools, yaml).expect("pools file");

    let report = json(&check_nfs(
        Command::new(&agent)
            .args(["check-nfs", "-o", "json", "--pools-file"])
            .arg(&pools),
    ));
    for pool in ["shared", "below"] {
        let s = server(&report, pool);
        assert_eq!(s["reachable"], true, "{s:#}");
        assert_eq!(s["exports"], serde_json::json!([export]), "{s:#}");
    }
    let s = server(&report, "elsewhere");
    assert_eq!(s["reachable"], false, "{s:#}");
    let message = s["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/srv/not-exported is not exported by")
            && message.contains(&format!("it exports: {export}")),
        "{message}"
    );
}

#[test]
fn a_stopped_or_hung_server_fails_within_the_deadline_with_the_real_error() {
    let agent = agent_binary().expect("agent binary");
    let dir = TempDir::new(&unique("volpool-nfs-down")).expect("temp dir");
    let export = dir.join("export");
    let nfs = NfsServer::start(&[&export]).expect("nfs-ganesha");
    let pools = dir.join("pools.yaml");
    std::fs::write(
        &pools,
        nfs_pool("shared", nfs.address(), &export.to_string_lossy(), ""),
    )
    .expect("pools file");
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
    let report = probe(&pools);
    let s = server(&report, "shared");
    assert_eq!(s["reachable"], false, "{s:#}");
    let message = s["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "{}:111 (portmapper): no answer within 2s",
            nfs.address()
        )),
        "{message}"
    );

    nfs.thaw().expect("thaw");
    assert_eq!(server(&probe(&pools), "shared")["reachable"], true);

    nfs.stop().expect("stop");
    let report = probe(&pools);
    let s = server(&report, "shared");
    assert_eq!(s["reachable"], false, "{s:#}");
    let message = s["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("{}:2049 (nfs)", nfs.address())) && message.contains("refused"),
        "{message}"
    );
}

#[test]
fn nfsv3_with_locking_needs_statd_registered_with_the_hosts_portmapper() {
    let agent = agent_binary().expect("agent binary");
    let dir = TempDir::new(&unique("volpool-nfs-statd")).expect("temp dir");
    let export = dir.join("export");
    let nfs = NfsServer::start(&[&export]).expect("nfs-ganesha");
    let pools = dir.join("pools.yaml");
    std::fs::write(
        &pools,
        nfs_pool(
            "locked",
            nfs.address(),
            &export.to_string_lossy(),
            "nfsvers=3",
        ),
    )
    .expect("pools file");
    // Inside the server's namespace, 127.0.0.1:111 is a real rpcbind without rpc.statd.
    let report = json(&check_nfs(
        nfs.in_netns(&agent)
            .args(["check-nfs", "-o", "json", "--pools-file"])
            .arg(&pools),
    ));
    let (status, message) = check(&report, "rpc-statd");
    assert_eq!(status, "NonOK", "{report:#}");
    assert!(
        message.contains("rpc.statd is not registered with rpcbind on 127.0.0.1:111"),
        "{message}"
    );
    assert_eq!(server(&report, "locked")["reachable"], true, "{report:#}");
}
