//! The node's cluster network, checked from the node: the `kubernetes` Service answers, kube-proxy
//! programmed it, a CNI config exists and the Node's podCIDR is inside its network. And the
//! way around a Service that does not answer: the apiserver URL of the kubelet's kubeconfig.
//!
//! ```text
//!  Service IP ─► probe::tls ────────────────────────┐
//!  <host root> ─► kubeproxy::save_nat, /proc/net/ip_vs ┤
//!  <host root> ─► cni::read ─────────────────────────┼─► checks ─► NetworkStatus
//!  Node spec.podCIDR ─────────────────────────────────┘
//!  <host root> ─► kubeconfig::find ─► probe::tls ─► apiserver::Paths (service | kubelet-kubeconfig)
//! ```

pub mod apiserver;
pub mod checks;
pub mod cidr;
pub mod cli;
pub mod cni;
pub mod daemon;
pub mod error;
pub mod kubeconfig;
pub mod kubeproxy;
pub mod metrics;
pub mod probe;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use volpool_api::{Check, CheckStatus, NetworkStatus};

use crate::host::Host;
use checks::NodeCidr;
pub use error::NetworkError;
use kubeconfig::KubeletApiserver;

/// Where the runtime looks for CNI configs by default.
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";

/// What the network checks need to know besides the host.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// The node's root (`iptables-save` runs chrooted into it).
    pub host_root: PathBuf,
    /// The `kubernetes` Service's ClusterIP (`KUBERNETES_SERVICE_HOST` in a pod, or
    /// `--service-ip`); else read from kube-proxy's rules.
    pub service_ip: Option<IpAddr>,
    /// Host paths of the kubelet kubeconfig, tried in order.
    pub kubelet_kubeconfigs: Vec<String>,
    /// Host paths of the CNI config directories, tried in order.
    pub cni_dirs: Vec<PathBuf>,
    /// kube-proxy's health endpoint on the node, asked when its rules are missing.
    pub kube_proxy_healthz: SocketAddr,
    /// Deadline of each network step and of `iptables-save`.
    pub deadline: Duration,
}

impl NetworkConfig {
    /// Defaults for `host_root`: the Service IP from the environment, the usual kubeconfig
    /// paths and `/etc/cni/net.d`, 3 s deadlines.
    pub fn new(host_root: &Path) -> Self {
        NetworkConfig {
            host_root: host_root.to_path_buf(),
            service_ip: std::env::var("KUBERNETES_SERVICE_HOST")
                .ok()
                .and_then(|h| h.parse().ok()),
            kubelet_kubeconfigs: kubeconfig::DEFAULT_PATHS
                .iter()
                .map(ToString::to_string)
                .collect(),
            cni_dirs: vec![PathBuf::from(CNI_CONF_DIR)],
            kube_proxy_healthz: SocketAddr::from(([127, 0, 0, 1], 10256)),
            deadline: Duration::from_secs(3),
        }
    }
}

/// The port of the `kubernetes` Service.
const SERVICE_PORT: u16 = 443;

/// One evaluation: the checks, and whether the Service answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The four checks: kubernetes-service, kube-proxy-rules, cni-config, pod-cidr.
    pub checks: Vec<Check>,
    /// The Service address checked, when known.
    pub service: Option<SocketAddr>,
    /// The Service answered TCP and TLS.
    pub service_answers: bool,
    /// The CNI config found (to check another podCIDR against).
    pub cni: cni::CniFound,
}

impl Evaluation {
    /// The status to publish, with the path in use.
    pub fn status(&self, via: &str) -> NetworkStatus {
        NetworkStatus {
            ready: self.checks.iter().all(|c| c.status == CheckStatus::OK),
            apiserver_via: via.to_string(),
            checks: self.checks.clone(),
        }
    }

    /// The message of the Service check (for logs and readiness).
    pub fn service_message(&self) -> &str {
        self.checks
            .iter()
            .find(|c| c.name == checks::KUBERNETES_SERVICE)
            .map_or("", |c| c.message.as_str())
    }
}

/// Run every check.
pub async fn evaluate(host: &dyn Host, config: &NetworkConfig, node: &NodeCidr) -> Evaluation {
    let nat = kubeproxy::save_nat(&config.host_root, config.deadline).await;
    let service_ip = config.service_ip.or_else(|| {
        nat.as_deref()
            .ok()
            .and_then(kubeproxy::service_ip_from_rules)
    });
    let service = service_ip.map(|ip| SocketAddr::new(ip, SERVICE_PORT));
    let probe = match service {
        Some(addr) => probe::tls(addr, config.deadline).await,
        None => Ok(()),
    };
    let ip_vs = host.read_to_string(Path::new("/proc/net/ip_vs")).ok();
    let rules = service.map(|s| {
        nat.as_deref()
            .map(|text| kubeproxy::rules(text, ip_vs.as_deref(), s))
            .map_err(ToString::to_string)
    });
    let cni = cni::read(host, &config.cni_dirs);
    let mut rules_check = checks::kube_proxy_rules(service, rules.unwrap_or(Err(String::new())));
    if rules_check.status == CheckStatus::NonOK {
        let healthz = config.kube_proxy_healthz;
        rules_check.message.push_str(&match probe::http_status(healthz, "/healthz", config.deadline).await {
            Ok(200) => format!("; kube-proxy's /healthz ({healthz}) answers 200: it runs, and puts the rules back at its next sync"),
            Ok(code) => format!("; kube-proxy's /healthz ({healthz}) answers {code}: its rules are stale, read its log"),
            Err(e) => format!("; kube-proxy's /healthz ({healthz}) does not answer ({e}): kube-proxy is not running on this node, or is stuck"),
        });
    }
    Evaluation {
        checks: vec![
            checks::kubernetes_service(service, &probe),
            rules_check,
            checks::cni_config(&cni),
            checks::pod_cidr(node, &cni),
        ],
        service,
        service_answers: service.is_some() && probe.is_ok(),
        cni,
    }
}

/// The kubelet kubeconfig's apiserver and whether it answers TCP and TLS.
pub async fn kubelet_apiserver(
    host: &dyn Host,
    config: &NetworkConfig,
) -> Result<KubeletApiserver, String> {
    let found = kubeconfig::find(host, &config.kubelet_kubeconfigs)?;
    probe_url(&found.server, config.deadline)
        .await
        .map_err(|e| format!("{} (from {}): {e}", found.server, found.path))?;
    Ok(found)
}

/// Whether the apiserver at `url` answers TCP and TLS (the name resolved first).
pub async fn probe_url(url: &str, deadline: Duration) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let name = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(443);
    let addr = tokio::time::timeout(deadline, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| format!("resolving {name}: no answer within {deadline:?}"))?
        .map_err(|e| format!("resolving {name}: {e}"))?
        .next()
        .ok_or_else(|| format!("{name} has no address"))?;
    probe::tls(addr, deadline).await.map_err(|e| e.to_string())
}
