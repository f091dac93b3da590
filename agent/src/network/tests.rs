//! The network checks on fixture host roots (`testdata/network/<layout>`): flannel with its
//! lease, flannel without one (the seed's cluster), bridge with host-local ranges, and no CNI.

use std::path::{Path, PathBuf};

use volpool_api::{CheckStatus, VIA_KUBELET_KUBECONFIG, VIA_SERVICE};

use super::checks::{self, NodeCidr};
use super::cni::{self, CniFound, CniKind};
use super::{apiserver, kubeconfig, metrics};
use crate::host::RealHost;
use crate::state::NetworkOutcome;

fn root(layout: &str) -> RealHost {
    RealHost::new(Path::new(&format!(
        "{}/testdata/network/{layout}",
        env!("CARGO_MANIFEST_DIR")
    )))
}

fn read_cni(layout: &str) -> CniFound {
    cni::read(&root(layout), &[PathBuf::from(super::CNI_CONF_DIR)])
}

fn node(pod_cidr: &str) -> NodeCidr {
    NodeCidr::Known {
        node: "worker-1".into(),
        pod_cidr: pod_cidr.into(),
    }
}

#[test]
fn flannel_network_comes_from_its_lease() {
    let found = read_cni("flannel");
    let CniFound::Config { config, skipped } = &found else {
        panic!("{found:?}")
    };
    assert_eq!(config.file, "/etc/cni/net.d/10-flannel.conflist");
    assert!(skipped.is_empty());
    assert!(
        matches!(&config.kind, CniKind::Flannel { network: Some(n), source } if n.to_string() == "10.244.0.0/16" && source == "/run/flannel/subnet.env"),
        "{config:?}"
    );
    let ok = checks::pod_cidr(&node("10.244.1.0/24"), &found);
    assert_eq!(ok.status, CheckStatus::OK, "{ok:?}");
    let empty = checks::pod_cidr(&node(""), &found);
    assert_eq!(empty.status, CheckStatus::NonOK);
    assert!(
        empty.message.contains("no spec.podCIDR")
            && empty.message.contains("--pod-network-cidr=10.244.0.0/16"),
        "{}",
        empty.message
    );
    let outside = checks::pod_cidr(&node("192.168.0.0/24"), &found);
    assert_eq!(outside.status, CheckStatus::NonOK);
    assert!(
        outside.message.contains("192.168.0.0/24")
            && outside.message.contains("10.244.0.0/16")
            && outside.message.contains("Network"),
        "{}",
        outside.message
    );
}

#[test]
fn flannel_without_a_lease_and_no_pod_cidr_is_the_seeds_cluster() {
    let found = read_cni("flannel-nolease");
    let check = checks::pod_cidr(&node(""), &found);
    assert_eq!(check.status, CheckStatus::NonOK);
    assert!(
        check.message.contains("flanneld has no lease")
            && check.message.contains("pod cidr not assigned")
            && check.message.contains("--pod-network-cidr"),
        "{}",
        check.message
    );
}

#[test]
fn bridge_host_local_ranges_pass_over_a_broken_file() {
    let found = read_cni("bridge");
    let cni_check = checks::cni_config(&found);
    assert_eq!(cni_check.status, CheckStatus::OK);
    assert!(
        cni_check
            .message
            .contains("10-bridge.conflist (bridge with host-local IPAM)")
            && cni_check.message.contains("05-broken.conf: not valid JSON"),
        "{}",
        cni_check.message
    );
    assert_eq!(
        checks::pod_cidr(&node("10.244.1.0/24"), &found).status,
        CheckStatus::OK
    );
    let other = checks::pod_cidr(&node("10.245.1.0/24"), &found);
    assert_eq!(other.status, CheckStatus::NonOK);
    assert!(other.message.contains("10.244.1.0/24"), "{}", other.message);
}

#[test]
fn no_cni_config_is_non_ok_and_the_pod_cidr_unknown() {
    let found = read_cni("none");
    let check = checks::cni_config(&found);
    assert_eq!(check.status, CheckStatus::NonOK);
    assert!(
        check
            .message
            .contains("no valid CNI config in /etc/cni/net.d"),
        "{}",
        check.message
    );
    assert_eq!(
        checks::pod_cidr(&node("10.244.1.0/24"), &found).status,
        CheckStatus::Unknown
    );
}

#[test]
fn kubelet_kubeconfig_gives_server_and_ca_never_credentials() {
    let paths: Vec<String> = kubeconfig::DEFAULT_PATHS
        .iter()
        .map(ToString::to_string)
        .collect();
    let flannel = kubeconfig::find(&root("flannel"), &paths).expect("kubeadm kubelet.conf");
    assert_eq!(flannel.path, "/etc/kubernetes/kubelet.conf");
    assert_eq!(flannel.server, "https://127.0.0.1:6443");
    let bridge = kubeconfig::find(&root("bridge"), &paths).expect("kubelet kubeconfig");
    assert_eq!(bridge.server, "https://192.0.2.10:443");
    assert!(
        String::from_utf8_lossy(bridge.ca_pem.as_deref().unwrap_or_default())
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let missing = kubeconfig::find(&root("none"), &paths).expect_err("no kubeconfig");
    assert!(missing.contains("--kubelet-kubeconfig"), "{missing}");

    let mut base = kube::Config::new("https://10.0.0.1:443".parse().expect("uri"));
    base.auth_info.token_file = Some("/var/run/secrets/kubernetes.io/serviceaccount/token".into());
    base.root_cert_file = Some("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".into());
    let config = apiserver::fallback_config(&base, &bridge).expect("fallback config");
    assert_eq!(config.cluster_url.to_string(), "https://192.0.2.10:443/");
    assert_eq!(config.root_cert.as_ref().map(Vec::len), Some(1));
    assert_eq!(config.root_cert_file, None);
    assert_eq!(config.auth_info.token_file, base.auth_info.token_file);
    assert!(
        config.auth_info.token.is_none()
            && config.auth_info.client_certificate.is_none()
            && config.auth_info.client_key.is_none(),
        "the agent's own token only"
    );
}

#[test]
fn metrics_show_each_check_and_the_path_in_use() {
    let latest = NetworkOutcome {
        status: volpool_api::NetworkStatus {
            ready: false,
            apiserver_via: VIA_KUBELET_KUBECONFIG.into(),
            checks: vec![
                super::checks::kubernetes_service(
                    Some("10.0.0.1:443".parse().expect("addr")),
                    &Err(super::probe::ProbeError::Timeout(
                        std::time::Duration::from_secs(3),
                    )),
                ),
                checks::cni_config(&read_cni("none")),
                checks::pod_cidr(&NodeCidr::Unknown("standalone".into()), &read_cni("none")),
            ],
        },
        reachable: Some(true),
        note: String::new(),
    };
    let text = metrics::render(Some(&latest));
    for line in [
        "volpool_network_check{check=\"kubernetes-service\"} 0\n",
        "volpool_network_check{check=\"cni-config\"} 0\n",
        "volpool_network_check{check=\"pod-cidr\"} -1\n",
        "volpool_apiserver_reachable{via=\"service\"} 0\n",
        "volpool_apiserver_reachable{via=\"kubelet-kubeconfig\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    assert!(latest.status.checks[0].message.contains("i/o timeout"));
    assert_ne!(latest.status.apiserver_via, VIA_SERVICE);
    assert_eq!(metrics::render(None), "");
}
