//! The apiserver URL and CA of the node's kubelet kubeconfig, read under the host root. Only
//! those two: the kubelet's credentials are never read into the agent (its own ServiceAccount
//! token authenticates it on the fallback path too).
//!
//! ```text
//!  <host>/etc/kubernetes/kubelet.conf | /var/lib/kubelet/kubeconfig | ... ─► current-context
//!      ─► cluster.server, certificate-authority-data | <host>/<certificate-authority>
//! ```

use std::io::ErrorKind;
use std::path::Path;

use base64::Engine;
use kube::config::Kubeconfig;

use crate::host::Host;

/// Where kubelets keep their kubeconfig: kubeadm, GKE/EKS/AKS and kops, kubespray, k3s, RKE2,
/// MicroK8s. `--kubelet-kubeconfig` replaces the list.
pub const DEFAULT_PATHS: &[&str] = &[
    "/etc/kubernetes/kubelet.conf",
    "/var/lib/kubelet/kubeconfig",
    "/etc/kubernetes/kubelet.kubeconfig",
    "/etc/kubernetes/kubelet-kubeconfig",
    "/var/lib/rancher/k3s/agent/kubelet.kubeconfig",
    "/var/lib/rancher/rke2/agent/kubelet.kubeconfig",
    "/var/snap/microk8s/current/credentials/kubelet.config",
];

/// The apiserver as the kubelet reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletApiserver {
    /// Host path of the kubeconfig it came from.
    pub path: String,
    /// `cluster.server`.
    pub server: String,
    /// The CA bundle (PEM), when the kubeconfig names one.
    pub ca_pem: Option<Vec<u8>>,
}

/// The first of `paths` that exists and names a server; `Err` says what was found instead.
pub fn find(host: &dyn Host, paths: &[String]) -> Result<KubeletApiserver, String> {
    let mut problems = Vec::new();
    for path in paths {
        match host.read_to_string(Path::new(path)) {
            Ok(text) => match parse(host, path, &text) {
                Ok(found) => return Ok(found),
                Err(e) => problems.push(format!("{path}: {e}")),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("{path}: {e}")),
        }
    }
    if problems.is_empty() {
        Err(format!(
            "no kubelet kubeconfig at {} (set --kubelet-kubeconfig)",
            paths.join(", ")
        ))
    } else {
        Err(problems.join("; "))
    }
}

/// Server and CA of the current context's cluster.
pub fn parse(host: &dyn Host, path: &str, text: &str) -> Result<KubeletApiserver, String> {
    let config = Kubeconfig::from_yaml(text).map_err(|e| format!("not a kubeconfig: {e}"))?;
    let cluster_name = config
        .current_context
        .as_ref()
        .and_then(|name| config.contexts.iter().find(|c| &c.name == name))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let named = config
        .clusters
        .iter()
        .find(|c| Some(&c.name) == cluster_name.as_ref());
    let cluster = named
        .or(config.clusters.first())
        .and_then(|c| c.cluster.as_ref())
        .ok_or("no cluster")?;
    let server = cluster.server.clone().ok_or("the cluster has no server")?;
    let ca_pem = if let Some(data) = &cluster.certificate_authority_data {
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| format!("certificate-authority-data is not base64: {e}"))?,
        )
    } else if let Some(file) = &cluster.certificate_authority {
        // NB: a relative CA path is relative to the kubeconfig's directory.
        let file = Path::new(path)
            .parent()
            .unwrap_or(Path::new("/"))
            .join(file);
        Some(
            host.read_to_string(&file)
                .map_err(|e| format!("certificate-authority {}: {e}", file.display()))?
                .into_bytes(),
        )
    } else {
        None
    };
    Ok(KubeletApiserver {
        path: path.to_string(),
        server,
        ca_pem,
    })
}
