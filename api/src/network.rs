//! `NodeVolumes.status.network`: what the node's agent found about the cluster network it
//! depends on, and which way it reaches the apiserver.
//!
//! ```text
//!  agent: kubernetes Service (TCP+TLS) ─┐
//!         kube-proxy rules (read only)  ├─► NetworkStatus { ready, apiserverVia, checks }
//!         Node spec.podCIDR vs CNI conf ┘
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::node::Check;

/// The agent reaches the apiserver through the `kubernetes` Service (in-cluster config).
pub const VIA_SERVICE: &str = "service";
/// The agent reaches the apiserver at the URL of the node's kubelet kubeconfig (the Service
/// does not answer from the node); its own ServiceAccount token still authenticates it.
pub const VIA_KUBELET_KUBECONFIG: &str = "kubelet-kubeconfig";
/// The agent runs outside a pod with a kubeconfig of its own.
pub const VIA_KUBECONFIG: &str = "kubeconfig";

/// The node's cluster network, as the agent sees it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    /// Every check is OK.
    #[serde(default)]
    pub ready: bool,
    /// How the agent reaches the apiserver: `service`, `kubelet-kubeconfig` or `kubeconfig`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub apiserver_via: String,
    /// Individual checks: `kubernetes-service`, `kube-proxy-rules`, `cni-config`, `pod-cidr`.
    #[serde(default)]
    pub checks: Vec<Check>,
}
