//! The four network checks, pure over what was read: each returns one [`Check`] (OK / NonOK /
//! Unknown) whose message says what was found and, when not OK, what to do.
//!
//! ```text
//!  TCP+TLS to the Service ─────────► kubernetes-service
//!  iptables-save / ip_vs ──────────► kube-proxy-rules
//!  CNI config dir ─────────────────► cni-config
//!  Node spec.podCIDR + CNI network ► pod-cidr
//! ```

use std::net::SocketAddr;

use volpool_api::{Check, CheckStatus};

use super::cni::{CniFound, CniKind};
use super::kubeproxy::Rules;
use super::probe::ProbeError;
use crate::nfs::checks::check;

/// Name of the Service reachability check.
pub const KUBERNETES_SERVICE: &str = "kubernetes-service";
/// Name of the kube-proxy rules check.
pub const KUBE_PROXY_RULES: &str = "kube-proxy-rules";
/// Name of the CNI config check.
pub const CNI_CONFIG: &str = "cni-config";
/// Name of the pod CIDR check.
pub const POD_CIDR: &str = "pod-cidr";

/// The Node's pod CIDR, as far as it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeCidr {
    /// The Node's name and its `spec.podCIDR` ("" when unset).
    Known {
        /// Node name.
        node: String,
        /// `spec.podCIDR`.
        pod_cidr: String,
    },
    /// Not known; why.
    Unknown(String),
}

const WHAT_TO_CHECK: &str = "check kube-proxy on this node (the kube-proxy-rules check) and, \
     for pods, the Node's spec.podCIDR against the CNI network (the pod-cidr check)";

/// `kubernetes-service`: the Service's ClusterIP:443 answers TCP and TLS from the node.
pub fn kubernetes_service(service: Option<SocketAddr>, probe: &Result<(), ProbeError>) -> Check {
    let Some(service) = service else {
        return check(
            KUBERNETES_SERVICE,
            CheckStatus::Unknown,
            "the kubernetes Service's ClusterIP is not known: pass --service-ip (kubectl get \
             service kubernetes -n default), or run in a pod",
        );
    };
    match probe {
        Ok(()) => check(
            KUBERNETES_SERVICE,
            CheckStatus::OK,
            format!("the kubernetes Service {service} answers TCP and TLS from this node"),
        ),
        Err(e) => check(
            KUBERNETES_SERVICE,
            CheckStatus::NonOK,
            format!(
                "the kubernetes Service {service} does not answer from this node (dial tcp \
                 {service}: {e}): pods here cannot reach the apiserver through it; \
                 {WHAT_TO_CHECK}"
            ),
        ),
    }
}

/// `kube-proxy-rules`: kube-proxy programmed the Service (read only).
pub fn kube_proxy_rules(service: Option<SocketAddr>, rules: Result<Rules, String>) -> Check {
    let Some(service) = service else {
        return check(
            KUBE_PROXY_RULES,
            CheckStatus::Unknown,
            "the kubernetes Service's ClusterIP is not known (no rule of kube-proxy names \
             it): pass --service-ip",
        );
    };
    match rules {
        Err(e) => check(
            KUBE_PROXY_RULES,
            CheckStatus::Unknown,
            format!("cannot read the nat table (iptables-save in the host root): {e}"),
        ),
        Ok(Rules::Programmed { how, endpoints }) => check(
            KUBE_PROXY_RULES,
            CheckStatus::OK,
            format!("{how} sends {service} to {}", endpoints.join(", ")),
        ),
        Ok(Rules::NoKubeProxy) => check(
            KUBE_PROXY_RULES,
            CheckStatus::NonOK,
            format!(
                "no kube-proxy rules on this node (no KUBE-SERVICES chain in the nat table, \
                 no IPVS virtual server for {service}): kube-proxy is not running here or \
                 never synced; start it (its DaemonSet pod on this node, or systemctl status \
                 kube-proxy) and read its log"
            ),
        ),
        Ok(Rules::NotProgrammed(what)) => check(
            KUBE_PROXY_RULES,
            CheckStatus::NonOK,
            format!(
                "{what}: kube-proxy on this node is not keeping its rules in sync; read its \
                 log, and check `kubectl get endpoints kubernetes -n default`"
            ),
        ),
    }
}

/// `cni-config`: a CNI config the runtime can use exists.
pub fn cni_config(found: &CniFound) -> Check {
    match found {
        CniFound::Config { config, skipped } => {
            let what = match &config.kind {
                CniKind::Flannel { .. } => "flannel".to_string(),
                CniKind::HostLocal { plugin, .. } => format!("{plugin} with host-local IPAM"),
                CniKind::Other(types) => types.clone(),
            };
            let mut message = format!("{} ({what})", config.file);
            if !skipped.is_empty() {
                message.push_str(&format!("; passed over: {}", skipped.join("; ")));
            }
            check(CNI_CONFIG, CheckStatus::OK, message)
        }
        CniFound::Missing { dirs, problems } => {
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            let mut message = format!(
                "no valid CNI config in {}: pods on this node cannot start (the kubelet \
                 reports \"network plugin is not ready: cni config uninitialized\"); install a \
                 pod network (e.g. flannel, whose Network must match --pod-network-cidr)",
                dirs.join(", ")
            );
            if !problems.is_empty() {
                message.push_str(&format!("; found: {}", problems.join("; ")));
            }
            check(CNI_CONFIG, CheckStatus::NonOK, message)
        }
    }
}

/// `pod-cidr`: the Node's `spec.podCIDR` is set and inside the CNI's network.
pub fn pod_cidr(node: &NodeCidr, found: &CniFound) -> Check {
    let (node, pod_cidr) = match node {
        NodeCidr::Known { node, pod_cidr } => (node, pod_cidr),
        NodeCidr::Unknown(why) => {
            return check(
                POD_CIDR,
                CheckStatus::Unknown,
                format!("the Node's spec.podCIDR is not known ({why}): pass --pod-cidr"),
            );
        }
    };
    let CniFound::Config { config, .. } = found else {
        return check(
            POD_CIDR,
            CheckStatus::Unknown,
            "no CNI config to compare spec.podCIDR with (see the cni-config check)",
        );
    };
    let (networks, source) = match cni_network(node, pod_cidr, config) {
        Ok(found) => found,
        Err(result) => return result,
    };
    let per_node = matches!(config.kind, CniKind::HostLocal { .. });
    let network: Vec<String> = networks.iter().map(ToString::to_string).collect();
    let network = network.join(", ");
    let fix = if per_node {
        "make them agree: let the CNI take its range from the Node (host-local \"usePodCidr\"), \
         or give each Node the podCIDR its CNI range is in (kube-controller-manager \
         --allocate-node-cidrs --cluster-cidr, kubeadm init --pod-network-cidr)"
            .to_string()
    } else {
        format!(
            "create the cluster with kubeadm init --pod-network-cidr={network} (or \
             kube-controller-manager --allocate-node-cidrs --cluster-cidr={network}), or set the \
             CNI's Network to the cluster's pod CIDR"
        )
    };
    if pod_cidr.is_empty() {
        return check(
            POD_CIDR,
            CheckStatus::NonOK,
            format!(
                "Node {node} has no spec.podCIDR; the CNI network is {network} ({source}): {fix}"
            ),
        );
    }
    match pod_cidr.parse::<super::cidr::Cidr>() {
        Err(e) => check(
            POD_CIDR,
            CheckStatus::NonOK,
            format!("spec.podCIDR of Node {node}: {e}"),
        ),
        Ok(cidr) if networks.iter().any(|n| n.overlaps(&cidr)) => check(
            POD_CIDR,
            CheckStatus::OK,
            format!(
                "spec.podCIDR {cidr} of Node {node} is inside the CNI network {network} ({source})"
            ),
        ),
        Ok(cidr) => check(
            POD_CIDR,
            CheckStatus::NonOK,
            format!(
                "spec.podCIDR {cidr} of Node {node} is outside the CNI network {network} \
                 ({source}): pods get addresses that routes and kube-proxy do not expect; {fix}"
            ),
        ),
    }
}

/// The networks the CNI config gives pods, and where they came from; or the check's result
/// when the config alone decides it (flannel without a lease, usePodCidr, an unknown CNI).
fn cni_network(
    node: &str,
    pod_cidr: &str,
    config: &super::cni::CniConfig,
) -> Result<(Vec<super::cidr::Cidr>, String), Check> {
    match &config.kind {
        CniKind::Flannel {
            network: Some(network),
            source,
        } => Ok((vec![*network], format!("flannel's Network, from {source}"))),
        CniKind::Flannel {
            network: None,
            source,
        } if pod_cidr.is_empty() => Err(check(
            POD_CIDR,
            CheckStatus::NonOK,
            format!(
                "flannel is the CNI ({}) but its network is not on the host ({source}): \
                 flanneld has no lease, and Node {node} has no spec.podCIDR, which flanneld \
                 needs (\"pod cidr not assigned\"): create the cluster with kubeadm init \
                 --pod-network-cidr=<flannel's Network, 10.244.0.0/16 by default> \
                 (kube-controller-manager --allocate-node-cidrs --cluster-cidr)",
                config.file
            ),
        )),
        CniKind::Flannel {
            network: None,
            source,
        } => Err(check(
            POD_CIDR,
            CheckStatus::Unknown,
            format!(
                "flannel is the CNI ({}) but its network is not on the host ({source}): \
                 flanneld has no lease; read the flannel pod's log on this node (spec.podCIDR \
                 is {pod_cidr})",
                config.file
            ),
        )),
        CniKind::HostLocal {
            use_pod_cidr: true, ..
        } if pod_cidr.is_empty() => Err(check(
            POD_CIDR,
            CheckStatus::NonOK,
            format!(
                "the CNI ({}) takes its range from the Node's podCIDR (usePodCidr), and Node \
                 {node} has none: set --allocate-node-cidrs and --cluster-cidr on \
                 kube-controller-manager (kubeadm init --pod-network-cidr)",
                config.file
            ),
        )),
        CniKind::HostLocal {
            use_pod_cidr: true, ..
        } => Err(check(
            POD_CIDR,
            CheckStatus::OK,
            format!(
                "the CNI ({}) takes its range from spec.podCIDR {pod_cidr} of Node {node} \
                 (usePodCidr)",
                config.file
            ),
        )),
        CniKind::HostLocal { plugin, ranges, .. } => Ok((
            ranges.clone(),
            format!("the {plugin} host-local ranges in {}", config.file),
        )),
        CniKind::Other(types) => Err(check(
            POD_CIDR,
            CheckStatus::Unknown,
            format!(
                "spec.podCIDR of Node {node} is {}; the CNI ({types}, {}) is not one this check \
                 reads (flannel, bridge/host-local)",
                if pod_cidr.is_empty() {
                    "unset"
                } else {
                    pod_cidr
                },
                config.file
            ),
        )),
    }
}
