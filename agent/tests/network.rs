//! `volpool-agent check-network` on fixture host roots (`testdata/network/<layout>`: flannel,
//! flannel without a lease, bridge with host-local ranges, no CNI at all), each run in a network
//! namespace of its own where a real TLS server (`openssl s_server`) plays the apiserver at the
//! address the test chooses: on the Service IP, or only at the kubelet kubeconfig's server.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use volpool_testkit::TempDir;
use volpool_testkit::agent::{check_of, json_report, message_of};

const AGENT: &str = env!("CARGO_BIN_EXE_volpool-agent");

fn layout(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/network")
        .join(name)
}

/// Run `check-network` on `root` in a fresh network and pid namespace (everything in it dies
/// with it); with `server`, a TLS server listens on that `ip:port` first.
fn check_network(root: &str, server: Option<&str>, args: &[&str]) -> (Value, i32, String) {
    let tmp = TempDir::new("check-network").expect("temp dir");
    let (cert, key) = (tmp.join("tls.crt"), tmp.join("tls.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kube-apiserver",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    let mut script = String::from("set -e; ip link set lo up\n");
    if let Some(server) = server {
        let (ip, port) = server.rsplit_once(':').expect("ip:port");
        script.push_str(&format!(
            "ip addr add {ip}/32 dev lo 2>/dev/null || true\n\
             openssl s_server -quiet -accept {server} -cert {} -key {} >/dev/null 2>&1 &\n\
             for i in $(seq 100); do (exec 3<>/dev/tcp/{ip}/{port}) 2>/dev/null && break; sleep 0.05; done\n",
            cert.display(),
            key.display()
        ));
    }
    script.push_str("exec \"$@\"\n");
    let out: Output = Command::new("unshare")
        .args([
            "--net",
            "--pid",
            "--fork",
            "--kill-child",
            "bash",
            "-c",
            &script,
            "check",
        ])
        .arg(AGENT)
        .arg("--host-root")
        .arg(layout(root))
        .args(["check-network", "--network-timeout", "1s", "-o", "json"])
        .args(args)
        .output()
        .expect("unshare");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = json_report(&out, "volpool-agent check-network");
    (report, out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn flannel_node_whose_service_answers_and_pod_cidr_fits_has_no_non_ok_check() {
    let (report, code, stderr) = check_network(
        "flannel",
        Some("10.0.0.1:443"),
        &["--service-ip", "10.0.0.1", "--pod-cidr", "10.244.1.0/24"],
    );
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(check_of(&report, "kubernetes-service").0, "OK");
    // NB: the fixture root has no iptables-save to run: the rules cannot be told.
    assert_eq!(check_of(&report, "kube-proxy-rules").0, "Unknown");
    let message = message_of(&report, "cni-config", "OK");
    assert_eq!(message, "/etc/cni/net.d/10-flannel.conflist (flannel)");
    assert_eq!(check_of(&report, "pod-cidr").0, "OK");
    assert_eq!(report["apiserverVia"], "service");
    assert_eq!(report["ready"], false, "a check is Unknown");
}

#[test]
fn service_that_does_not_answer_leads_to_the_kubelet_kubeconfigs_server() {
    let (report, code, stderr) = check_network(
        "bridge",
        Some("192.0.2.10:443"),
        &["--service-ip", "10.0.0.1", "--pod-cidr", "10.245.0.0/24"],
    );
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    let message = message_of(&report, "kubernetes-service", "NonOK");
    assert!(
        message.contains("10.0.0.1:443") && message.contains("kube-proxy"),
        "{message}"
    );
    assert_eq!(report["apiserverVia"], "kubelet-kubeconfig", "{report:#}");
    assert_eq!(
        report["kubeletKubeconfig"],
        "https://192.0.2.10:443 (from /var/lib/kubelet/kubeconfig) answers"
    );
    let message = message_of(&report, "pod-cidr", "NonOK");
    assert!(
        message.contains("10.245.0.0/24") && message.contains("10.244.1.0/24"),
        "{message}"
    );
}

#[test]
fn node_without_cni_config_is_non_ok_and_says_what_to_install() {
    let (report, code, _) = check_network("none", None, &["--service-ip", "10.0.0.1"]);
    assert_eq!(code, 1);
    let message = message_of(&report, "cni-config", "NonOK");
    assert!(message.contains("cni config uninitialized"), "{message}");
    assert!(
        report.get("apiserverVia").is_none(),
        "nothing answers: {report:#}"
    );
    assert!(
        report["kubeletKubeconfig"]
            .as_str()
            .is_some_and(|m| m.contains("--kubelet-kubeconfig")),
        "{report:#}"
    );
}

#[test]
fn flannel_without_a_lease_on_a_node_without_pod_cidr_names_the_fix() {
    let (report, code, _) = check_network(
        "flannel-nolease",
        None,
        &["--service-ip", "10.0.0.1", "--pod-cidr", ""],
    );
    assert_eq!(code, 1);
    let message = message_of(&report, "pod-cidr", "NonOK");
    assert!(
        message.contains("pod cidr not assigned") && message.contains("--pod-network-cidr"),
        "{message}"
    );
}

#[test]
fn table_output_has_a_row_per_check_and_the_path() {
    let out = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--kill-child"])
        .arg(AGENT)
        .arg("--host-root")
        .arg(layout("none"))
        .args([
            "check-network",
            "--network-timeout",
            "1s",
            "--service-ip",
            "10.0.0.1",
        ])
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let first: Vec<&str> = text
        .lines()
        .take(5)
        .map(|l| l.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(
        first,
        [
            "CHECK",
            "kubernetes-service",
            "kube-proxy-rules",
            "cni-config",
            "pod-cidr"
        ]
    );
    assert!(text.contains("apiserver via: none answers\n"), "{text}");
    assert!(text.contains("network ready: no\n"), "{text}");
}
