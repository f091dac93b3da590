//! The node's CNI configuration, read under the host root as the container runtime reads it:
//! the first valid file (by name) of the CNI config directory, and for flannel the network
//! it leased from (`/run/flannel/subnet.env`, or a `net-conf.json` on the host).
//!
//! ```text
//!  <cni dir>/*.conf|*.conflist|*.json ─► first valid ─► plugins ─┬─ flannel ─► subnet.env | net-conf.json ─► Network
//!                                                                ├─ host-local ipam ─► ranges (or usePodCidr)
//!                                                                └─ other (calico, cilium, ...)
//! ```

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::cidr::Cidr;
use crate::host::Host;

/// Where flanneld writes the lease it holds (and the cluster network).
pub const FLANNEL_SUBNET_ENV: &str = "/run/flannel/subnet.env";
/// Where a flannel install may keep `net-conf.json` on the host (the manifest mounts it from
/// a ConfigMap into the flannel pod instead).
pub const FLANNEL_NET_CONF: &str = "/etc/kube-flannel/net-conf.json";

/// The CNI config the runtime uses.
#[derive(Clone, Debug, PartialEq)]
pub struct CniConfig {
    /// Host path of the file.
    pub file: String,
    /// Its `name`.
    pub name: String,
    /// What it says about pod addresses.
    pub kind: CniKind,
}

/// How the CNI config assigns pod addresses.
#[derive(Clone, Debug, PartialEq)]
pub enum CniKind {
    /// flannel: every pod address is in the flannel network.
    Flannel {
        /// The flannel network (`Network` / `FLANNEL_NETWORK`), when found.
        network: Option<Cidr>,
        /// The file it came from, or why none was found.
        source: String,
    },
    /// host-local IPAM (bridge, ptp, macvlan, ...).
    HostLocal {
        /// The plugin that uses it (`bridge`, ...).
        plugin: String,
        /// Its static ranges.
        ranges: Vec<Cidr>,
        /// A range is `usePodCidr`: the Node's podCIDR is the range.
        use_pod_cidr: bool,
    },
    /// A CNI this check does not read (calico, cilium, weave, ...): the plugin types.
    Other(String),
}

/// What the CNI config directories hold.
#[derive(Clone, Debug, PartialEq)]
pub enum CniFound {
    /// The config the runtime uses; `skipped` lists invalid files before it.
    Config {
        /// The config.
        config: CniConfig,
        /// Files passed over, with why.
        skipped: Vec<String>,
    },
    /// No valid config in any directory; the reasons per file or directory.
    Missing {
        /// Directories looked in.
        dirs: Vec<PathBuf>,
        /// What was wrong with what was there.
        problems: Vec<String>,
    },
}

/// Read the first valid CNI config of `dirs` (in order; files by name, as the runtime does).
pub fn read(host: &dyn Host, dirs: &[PathBuf]) -> CniFound {
    let mut problems = Vec::new();
    for dir in dirs {
        let names = match host.list_dir(dir) {
            Ok(names) => names,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        let configs = names.iter().filter(|n| {
            [".conf", ".conflist", ".json"]
                .iter()
                .any(|ext| n.ends_with(ext))
        });
        for name in configs {
            let path = dir.join(name);
            match host.read_to_string(&path).map_err(|e| e.to_string()) {
                Ok(text) => match parse(host, &path, &text) {
                    Ok(config) => {
                        return CniFound::Config {
                            config,
                            skipped: problems,
                        };
                    }
                    Err(e) => problems.push(format!("{}: {e}", path.display())),
                },
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
    }
    CniFound::Missing {
        dirs: dirs.to_vec(),
        problems,
    }
}

/// Parse one CNI config file (a `.conflist` or a single-plugin `.conf`).
pub fn parse(host: &dyn Host, path: &Path, text: &str) -> Result<CniConfig, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e}), skipped"))?;
    let plugins: Vec<&Value> = match value.get("plugins") {
        Some(Value::Array(plugins)) => plugins.iter().collect(),
        Some(_) => return Err("\"plugins\" is not a list, skipped".into()),
        None => vec![&value],
    };
    let types: Vec<&str> = plugins
        .iter()
        .filter_map(|p| p.get("type")?.as_str())
        .collect();
    if types.is_empty() {
        return Err("no plugin has a \"type\", skipped".into());
    }
    let kind = if let Some(flannel) = plugins.iter().find(|p| p["type"] == "flannel") {
        flannel_network(host, flannel)
    } else if let Some((plugin, ipam)) = plugins
        .iter()
        .find_map(|p| Some((p["type"].as_str()?, p.get("ipam")?)))
        .filter(|(_, ipam)| ipam["type"] == "host-local")
    {
        host_local(plugin, ipam)?
    } else {
        CniKind::Other(types.join(", "))
    };
    Ok(CniConfig {
        file: path.display().to_string(),
        name: value["name"].as_str().unwrap_or_default().to_string(),
        kind,
    })
}

/// The host-local ranges: `ranges: [[{subnet}]]`, or the older single `subnet`.
fn host_local(plugin: &str, ipam: &Value) -> Result<CniKind, String> {
    let mut subnets: Vec<&str> = ipam["ranges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|r| r["subnet"].as_str())
        .collect();
    subnets.extend(ipam["subnet"].as_str());
    let use_pod_cidr = subnets.contains(&"usePodCidr");
    let ranges = subnets
        .iter()
        .filter(|s| **s != "usePodCidr")
        .map(|s| s.parse::<Cidr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("host-local range {e}, skipped"))?;
    Ok(CniKind::HostLocal {
        plugin: plugin.to_string(),
        ranges,
        use_pod_cidr,
    })
}

/// flannel's network: its `subnetFile` (default `/run/flannel/subnet.env`), else a
/// `net-conf.json` on the host.
fn flannel_network(host: &dyn Host, plugin: &Value) -> CniKind {
    let subnet_file = plugin["subnetFile"].as_str().unwrap_or(FLANNEL_SUBNET_ENV);
    let mut tried = Vec::new();
    match host.read_to_string(Path::new(subnet_file)) {
        Ok(text) => match env_value(&text, "FLANNEL_NETWORK").map(|v| v.parse::<Cidr>()) {
            Some(Ok(network)) => {
                return CniKind::Flannel {
                    network: Some(network),
                    source: subnet_file.to_string(),
                };
            }
            Some(Err(e)) => tried.push(format!("{subnet_file}: FLANNEL_NETWORK {e}")),
            None => tried.push(format!("{subnet_file} has no FLANNEL_NETWORK")),
        },
        Err(e) => tried.push(format!("{subnet_file}: {e}")),
    }
    match host.read_to_string(Path::new(FLANNEL_NET_CONF)) {
        Ok(text) => {
            let network = serde_json::from_str::<Value>(&text)
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    v["Network"]
                        .as_str()
                        .ok_or_else(|| "no \"Network\"".to_string())?
                        .parse::<Cidr>()
                });
            match network {
                Ok(network) => {
                    return CniKind::Flannel {
                        network: Some(network),
                        source: FLANNEL_NET_CONF.to_string(),
                    };
                }
                Err(e) => tried.push(format!("{FLANNEL_NET_CONF}: {e}")),
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => tried.push(format!("{FLANNEL_NET_CONF}: {e}")),
    }
    CniKind::Flannel {
        network: None,
        source: tried.join("; "),
    }
}

/// `KEY=value` from a shell-style env file such as flannel's `subnet.env`.
pub fn env_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod props;
