//! The agent's command line: global flags, the daemon's flags (no subcommand) and the
//! subcommands `scan`, `limits`, `scrub`, `check-nfs` and `check-network`. Parsed by `main`, which dispatches.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::cleanup;
use crate::network;
use crate::output;

/// volpool node agent: discovers and measures the volumes of local pools on this node and
/// publishes them as NodeVolumes/<node>.
#[derive(Parser)]
#[command(version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Where the node's root filesystem is (`/host` in a pod; `/` when run directly).
    #[arg(long, global = true, env = "HOST_ROOT")]
    pub host_root: Option<PathBuf>,
    /// This node's name (required in a cluster).
    #[arg(long, global = true, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Read VolumePools from this YAML stream instead of the cluster (no publishing).
    #[arg(long, global = true)]
    pub pools_file: Option<PathBuf>,
    /// Deadline of each statvfs; a mount that does not answer is Stuck.
    #[arg(long, global = true, default_value = "2s", value_parser = duration)]
    pub probe_timeout: Duration,
    /// Probe threads kept for normal work.
    #[arg(long, global = true, default_value_t = 4)]
    pub probe_workers: usize,
    /// Most probe threads at once, blocked ones included.
    #[arg(long, global = true, default_value_t = 16)]
    pub max_probe_threads: usize,
    /// Listen address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9810")]
    pub metrics_addr: String,
    /// Full rescan period (mount changes are noticed at once anyway).
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub resync: Duration,
    /// Install the NFS client into the host (chrooted) when it is missing.
    #[arg(long, env = "INSTALL_NFS_CLIENT")]
    pub install_nfs_client: bool,
    /// Deadline of each command of an NFS client install (--install-nfs-client).
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub install_timeout: Duration,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// How often the cluster network is checked (and the apiserver path chosen again).
    #[arg(long, env = "NETWORK_INTERVAL", default_value = "30s", value_parser = duration)]
    pub network_interval: Duration,
}

#[derive(Subcommand)]
pub enum Command {
    /// Scan once and print the NodeVolumes status this node would publish.
    Scan {
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: output::Format,
    },
    /// Print the node's and every container's memlock/nofile/nproc limits, locked memory and
    /// unmet requirements (Elasticsearch profile, volpool.io/require-* pod annotations), once.
    /// Containers are named from the Pods on --node-name when a cluster answers. Exit status 1
    /// when a requirement is not met.
    Limits {
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: output::Format,
    },
    /// Scrub one volume of the --pools-file pools by hand, as the daemon does for a request in
    /// NodeVolumes spec.cleanups: found by its volume ID (as `scan` prints it), refused if no
    /// entry has it. Exit status 0 Succeeded, 1 Failed, 2 Refused.
    Scrub {
        /// The volume's identity (`volumeID`).
        #[arg(long)]
        volume_id: String,
        /// Wipe (delete a filesystem's contents), Discard or Zero (a block device).
        #[arg(long, value_parser = cleanup::cli::parse_method)]
        method: volpool_api::CleanupMethod,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: output::Format,
    },
    /// Check the node's cluster network once: the kubernetes Service answers, kube-proxy
    /// programmed it, a CNI config exists and the Node's podCIDR is inside its network. Exit
    /// status 1 when a check is NonOK.
    CheckNetwork {
        /// The Node's podCIDR to check (default: read the Node when a cluster answers).
        #[arg(long)]
        pod_cidr: Option<String>,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: output::Format,
    },
    /// Check the NFS client prerequisites (and probe the NFS pools' servers), once.
    CheckNfs {
        /// Install the NFS client into the host root when it is missing.
        #[arg(long)]
        install: bool,
        /// Deadline of each install command.
        #[arg(long, default_value = "10m", value_parser = duration)]
        install_timeout: Duration,
        /// Deadline of each network step of a server probe.
        #[arg(long, default_value = "5s", value_parser = duration)]
        nfs_timeout: Duration,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: output::Format,
    },
}

pub fn duration(text: &str) -> Result<Duration, String> {
    volpool_api::units::parse_duration(text).map_err(|e| e.to_string())
}

/// The network flags the daemon and `check-network` share.
#[derive(clap::Args, Clone, Debug)]
pub struct NetworkArgs {
    /// The kubernetes Service's ClusterIP (default: KUBERNETES_SERVICE_HOST in a pod, else
    /// the address kube-proxy's rules name).
    #[arg(long, global = true, env = "VOLPOOL_SERVICE_IP")]
    pub service_ip: Option<std::net::IpAddr>,
    /// Host paths of the kubelet kubeconfig, tried in order (comma-separated); only its
    /// server URL and CA are read.
    #[arg(
        long,
        global = true,
        env = "KUBELET_KUBECONFIG",
        value_delimiter = ',',
        default_values = network::kubeconfig::DEFAULT_PATHS
    )]
    pub kubelet_kubeconfig: Vec<String>,
    /// Host paths of the CNI config directories, tried in order (comma-separated).
    #[arg(long, global = true, env = "CNI_CONF_DIR", value_delimiter = ',', default_value = network::CNI_CONF_DIR)]
    pub cni_conf_dir: Vec<std::path::PathBuf>,
    /// kube-proxy's health endpoint on the node (`healthzBindAddress`), asked when its rules
    /// are missing.
    #[arg(long, global = true, default_value = "127.0.0.1:10256")]
    pub kube_proxy_healthz: std::net::SocketAddr,
    /// Deadline of each network step and of iptables-save.
    #[arg(long, global = true, default_value = "3s", value_parser = duration)]
    pub network_timeout: std::time::Duration,
}

impl NetworkArgs {
    /// The checks' configuration for `host_root`.
    pub fn config(&self, host_root: &std::path::Path) -> network::NetworkConfig {
        let mut config = network::NetworkConfig::new(host_root);
        config.service_ip = self.service_ip.or(config.service_ip);
        config.kubelet_kubeconfigs = self.kubelet_kubeconfig.clone();
        config.cni_dirs = self.cni_conf_dir.clone();
        config.kube_proxy_healthz = self.kube_proxy_healthz;
        config.deadline = self.network_timeout;
        config
    }
}
