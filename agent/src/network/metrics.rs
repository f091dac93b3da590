//! The network families of `/metrics`, from the latest [`NetworkOutcome`] (text written once per
//! scrape from cached data; nothing is probed on a scrape).
//!
//! ```text
//!  NetworkState ─► render ─► volpool_network_check{check}, volpool_apiserver_reachable{via}
//! ```

use std::fmt::Write as _;

use volpool_api::{CheckStatus, VIA_KUBECONFIG, VIA_KUBELET_KUBECONFIG, VIA_SERVICE};

use crate::state::NetworkOutcome;

/// Name of the check family.
pub const NETWORK_CHECK: &str = "volpool_network_check";
/// Name of the apiserver path family.
pub const APISERVER_REACHABLE: &str = "volpool_apiserver_reachable";

/// The families as Prometheus text (empty before the first evaluation).
pub fn render(latest: Option<&NetworkOutcome>) -> String {
    let Some(latest) = latest else {
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP {NETWORK_CHECK} Cluster network check from the node: 1 OK, 0 NonOK, -1 Unknown.\n# TYPE {NETWORK_CHECK} gauge"
    );
    for c in &latest.status.checks {
        let value = match c.status {
            CheckStatus::OK => 1,
            CheckStatus::NonOK => 0,
            CheckStatus::Unknown => -1,
        };
        let _ = writeln!(out, "{NETWORK_CHECK}{{check=\"{}\"}} {value}", c.name);
    }
    if let Some(reachable) = latest.reachable {
        let _ = writeln!(
            out,
            "# HELP {APISERVER_REACHABLE} 1 on the path the agent reaches the apiserver by, when it answers; 0 otherwise.\n# TYPE {APISERVER_REACHABLE} gauge"
        );
        let via = latest.status.apiserver_via.as_str();
        let paths: &[&str] = if via == VIA_KUBECONFIG {
            &[VIA_KUBECONFIG]
        } else {
            &[VIA_SERVICE, VIA_KUBELET_KUBECONFIG]
        };
        for path in paths {
            let value = u8::from(reachable && *path == via);
            let _ = writeln!(out, "{APISERVER_REACHABLE}{{via=\"{path}\"}} {value}");
        }
    }
    out
}
