//! The network part of the daemon: every `--network-interval`, run the checks, choose the
//! apiserver path (back to the Service as soon as it answers, else the kubelet kubeconfig's
//! URL), log each change of path once, and keep the latest result for `/metrics`, `/readyz`
//! and `NodeVolumes.status.network`.
//!
//! ```text
//!  timer ─► evaluate ─► service answers? ─ yes ─► Paths::use_service
//!                                         └ no ─► kubeconfig::find + probe ─► Paths::use_kubelet
//!        ─► AgentState.network (status, via, reachable, note) ─► rescan (status changed)
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use volpool_api::{VIA_KUBECONFIG, VIA_KUBELET_KUBECONFIG, VIA_SERVICE};

use super::apiserver::Paths;
use super::checks::NodeCidr;
use super::{NetworkConfig, evaluate, kubelet_apiserver};
use crate::context::Context;
use crate::host::RealHost;
use crate::state::NetworkOutcome;

/// How soon a round runs again while the Node is not listed yet, or its podCIDR not read.
const NOT_LISTED_RETRY: Duration = Duration::from_secs(1);
/// How long after start the loop looks again every second until the Node's podCIDR is read.
const SETTLE: Duration = Duration::from_secs(30);

/// What the network loop needs.
pub struct NetworkLoop {
    /// Checks' configuration.
    pub config: NetworkConfig,
    /// Evaluate this often.
    pub interval: Duration,
    /// The Node's podCIDR, from the Node watch once it is listed.
    pub pod_cidr: Arc<OnceLock<PodCidr>>,
}

/// Reads the Node's podCIDR.
pub type PodCidr = Box<dyn Fn() -> NodeCidr + Send + Sync>;

impl NetworkLoop {
    /// The pause before the next round: short while the Node's podCIDR is not read yet in the
    /// first half minute, so the pod-cidr check settles right after start instead of one
    /// interval later (when it would rewrite NodeVolumes on a quiet node).
    fn next_round(&self, started: tokio::time::Instant) -> Duration {
        let settling =
            started.elapsed() < SETTLE && !matches!(self.node_cidr(), NodeCidr::Known { .. });
        if settling {
            self.interval.min(NOT_LISTED_RETRY)
        } else {
            self.interval
        }
    }

    fn node_cidr(&self) -> NodeCidr {
        match self.pod_cidr.get() {
            Some(read) => read(),
            None => NodeCidr::Unknown("the Node is not listed yet".into()),
        }
    }
}

/// Run forever. `paths` is `None` standalone (no apiserver).
pub async fn run(ctx: Arc<Context>, params: NetworkLoop, paths: Option<Arc<Paths>>) {
    let host = ctx.host.as_ref();
    let started = tokio::time::Instant::now();
    let mut last: Option<(String, Option<bool>)> = None;
    loop {
        // NB: until the Node is listed a round only chooses the path (the watches may need
        // the way around the Service to list it); its pod-cidr check would be replaced by the
        // next round's, a write of NodeVolumes for nothing.
        let listed = params.pod_cidr.get().is_some();
        let latest = once(host, &params, paths.as_deref()).await;
        let now = (latest.status.apiserver_via.clone(), latest.reachable);
        if last.as_ref() != Some(&now) {
            log_path(&latest);
            last = Some(now);
        }
        if !listed {
            tokio::time::sleep(NOT_LISTED_RETRY).await;
            continue;
        }
        if ctx.state.network.set(latest) {
            ctx.rescan.notify_one();
        }
        tokio::time::sleep(params.next_round(started)).await;
    }
}

/// One line per change of path.
fn log_path(latest: &NetworkOutcome) {
    let via = latest.status.apiserver_via.as_str();
    match latest.reachable {
        Some(true) if via == VIA_SERVICE => {
            tracing::info!(
                via,
                "the kubernetes Service answers from this node: apiserver via service"
            );
        }
        Some(true) if via == VIA_KUBELET_KUBECONFIG => {
            tracing::warn!(via, "{}; see volpool-agent check-network", latest.note)
        }
        Some(false) => tracing::error!(via, "the apiserver answers on no path: {}", latest.note),
        _ => {}
    }
}

/// One round: the checks, then the path (the Service when it answers, else the kubelet
/// kubeconfig's server when that answers, else unchanged).
pub async fn once(host: &RealHost, params: &NetworkLoop, paths: Option<&Paths>) -> NetworkOutcome {
    let eval = evaluate(host, &params.config, &params.node_cidr()).await;
    let Some(paths) = paths else {
        return NetworkOutcome {
            status: eval.status(""),
            reachable: None,
            note: String::new(),
        };
    };
    if !paths.switchable() {
        let answer = super::probe_url(paths.primary_url(), params.config.deadline).await;
        return NetworkOutcome {
            status: eval.status(VIA_KUBECONFIG),
            reachable: Some(answer.is_ok()),
            note: answer
                .err()
                .map(|e| format!("the kubeconfig's server: {e}"))
                .unwrap_or_default(),
        };
    }
    if eval.service_answers {
        paths.use_service();
        return NetworkOutcome {
            status: eval.status(VIA_SERVICE),
            reachable: Some(true),
            note: String::new(),
        };
    }
    let problem = eval.service_message().to_string();
    let fallback = match kubelet_apiserver(host, &params.config).await {
        Ok(found) => paths.use_kubelet(&found).map(|_| found),
        Err(e) => Err(e),
    };
    match fallback {
        Ok(found) => NetworkOutcome {
            status: eval.status(VIA_KUBELET_KUBECONFIG),
            reachable: Some(true),
            note: format!(
                "apiserver via kubelet-kubeconfig ({} from {}, with the agent's own token) because {problem}",
                found.server, found.path
            ),
        },
        Err(e) => {
            paths.use_service();
            NetworkOutcome {
                status: eval.status(VIA_SERVICE),
                reachable: Some(false),
                note: format!("{problem}; and the kubelet kubeconfig's server: {e}"),
            }
        }
    }
}
