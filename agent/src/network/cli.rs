//! `volpool-agent check-network`: the network checks once, printed for people (table) or
//! programs (json, yaml), with the apiserver path the agent would take. Exit status 1 when a
//! check is NonOK. Run on a node (`--host-root /`) or in the agent's pod (`kubectl exec`).
//!
//! ```text
//!  --host-root ─► evaluate ─► path (service | kubelet-kubeconfig) ─► Node spec.podCIDR (or --pod-cidr)
//!             ─► pod-cidr check ─► render ─► stdout
//! ```

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use serde::Serialize;
use volpool_api::{CheckStatus, NetworkStatus, VIA_KUBELET_KUBECONFIG, VIA_SERVICE};

use super::apiserver::Paths;
use super::checks::{self, NodeCidr};
use super::{NetworkConfig, evaluate, kubelet_apiserver};
use crate::host::RealHost;
use crate::output::{Format, checks_table};

/// What `check-network` was asked to do.
pub struct CheckNetwork {
    /// Checks' configuration.
    pub config: NetworkConfig,
    /// This node (its Node's spec.podCIDR is read when a cluster answers).
    pub node: Option<String>,
    /// The podCIDR to check, instead of reading the Node.
    pub pod_cidr: Option<String>,
    /// Output format.
    pub output: Format,
}

/// What `check-network` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The status the agent would publish.
    #[serde(flatten)]
    pub status: NetworkStatus,
    /// The kubelet kubeconfig's apiserver, and whether it answers (the agent's way around a
    /// Service that does not).
    pub kubelet_kubeconfig: String,
}

/// Run `check-network`; returns the text to print and the exit status.
pub fn run(args: CheckNetwork) -> Result<(String, i32), super::NetworkError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(super::NetworkError::StartRuntime)?;
    let report = runtime.block_on(report(&args));
    let code = i32::from(
        report
            .status
            .checks
            .iter()
            .any(|c| c.status == CheckStatus::NonOK),
    );
    let text = crate::output::encode(&report, args.output, table)
        .map_err(|(format, reason)| super::NetworkError::EncodeReport { format, reason })?;
    Ok((text, code))
}

async fn report(args: &CheckNetwork) -> Report {
    let host = RealHost::new(&args.config.host_root);
    let unknown = NodeCidr::Unknown(String::new());
    let mut eval = evaluate(&host, &args.config, &unknown).await;
    let kubelet = kubelet_apiserver(&host, &args.config).await;
    let via = if eval.service_answers {
        VIA_SERVICE
    } else if kubelet.is_ok() {
        VIA_KUBELET_KUBECONFIG
    } else {
        ""
    };
    let node = match (&args.pod_cidr, &args.node) {
        (Some(cidr), node) => NodeCidr::Known {
            node: node.clone().unwrap_or_else(|| "(this node)".into()),
            pod_cidr: cidr.clone(),
        },
        (None, Some(node)) => node_cidr(node, kubelet.as_ref().ok(), args).await,
        (None, None) => NodeCidr::Unknown("no --node-name".into()),
    };
    if let Some(c) = eval.checks.iter_mut().find(|c| c.name == checks::POD_CIDR) {
        *c = checks::pod_cidr(&node, &eval.cni);
    }
    Report {
        status: eval.status(via),
        kubelet_kubeconfig: match kubelet {
            Ok(found) => format!("{} (from {}) answers", found.server, found.path),
            Err(e) => e,
        },
    }
}

/// The Node's podCIDR, read over the path that answers (in a pod: the Service, or the kubelet
/// kubeconfig's server with the pod's token; outside: `$KUBECONFIG`).
async fn node_cidr(
    node: &str,
    kubelet: Option<&super::kubeconfig::KubeletApiserver>,
    args: &CheckNetwork,
) -> NodeCidr {
    let read = async {
        let (client, paths) = Paths::connect()
            .await
            .map_err(|e| format!("no cluster to read Node {node} from: {e}"))?;
        if let Some(found) = kubelet.filter(|_| paths.switchable()) {
            paths.use_kubelet(found)?;
        }
        let got = Api::<Node>::all(client).get(node).await;
        got.map_err(|e| format!("reading Node {node}: {e}"))
    };
    match tokio::time::timeout(args.config.deadline * 2, read).await {
        Ok(Ok(n)) => NodeCidr::Known {
            node: node.to_string(),
            pod_cidr: n.spec.and_then(|s| s.pod_cidr).unwrap_or_default(),
        },
        Ok(Err(e)) => NodeCidr::Unknown(e),
        Err(_) => NodeCidr::Unknown(format!(
            "no apiserver answered within {:?}",
            args.config.deadline * 2
        )),
    }
}

fn table(report: &Report) -> String {
    let mut out = checks_table(&report.status.checks);
    let via = match report.status.apiserver_via.as_str() {
        "" => "none answers",
        via => via,
    };
    out.push_str(&format!(
        "\nkubelet kubeconfig: {}\napiserver via: {via}\nnetwork ready: {}\n",
        report.kubelet_kubeconfig,
        if report.status.ready { "yes" } else { "no" }
    ));
    out
}
