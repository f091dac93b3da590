//! volpool-agent: the per-node DaemonSet. It discovers the mount points (and block devices) in
//! each local pool's discovery directory, measures them without ever hanging on a dead mount,
//! serves Prometheus metrics and publishes one `NodeVolumes` object per node, only on change.
//! `volpool-agent scan` does one scan and prints it, with no cluster needed.

mod cleanup;
mod cluster;
mod context;
mod error;
mod host;
mod http;
mod limits;
mod metrics;
mod nfs;
mod output;
mod pools;
mod run;
mod state;
mod volumes;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// volpool node agent: discovers and measures the volumes of local pools on this node and
/// publishes them as NodeVolumes/<node>.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where the node's root filesystem is (`/host` in a pod; `/` when run directly).
    #[arg(long, global = true, env = "HOST_ROOT")]
    host_root: Option<PathBuf>,
    /// This node's name (required in a cluster).
    #[arg(long, global = true, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Read VolumePools from this YAML stream instead of the cluster (no publishing).
    #[arg(long, global = true)]
    pools_file: Option<PathBuf>,
    /// Deadline of each statvfs; a mount that does not answer is Stuck.
    #[arg(long, global = true, default_value = "2s", value_parser = duration)]
    probe_timeout: Duration,
    /// Probe threads kept for normal work.
    #[arg(long, global = true, default_value_t = 4)]
    probe_workers: usize,
    /// Most probe threads at once, blocked ones included.
    #[arg(long, global = true, default_value_t = 16)]
    max_probe_threads: usize,
    /// Listen address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9810")]
    metrics_addr: String,
    /// Full rescan period (mount changes are noticed at once anyway).
    #[arg(long, default_value = "60s", value_parser = duration)]
    resync: Duration,
    /// Install the NFS client into the host (chrooted) when it is missing.
    #[arg(long, env = "INSTALL_NFS_CLIENT")]
    install_nfs_client: bool,
    /// Deadline of each command of an NFS client install (--install-nfs-client).
    #[arg(long, default_value = "10m", value_parser = duration)]
    install_timeout: Duration,
}

#[derive(Subcommand)]
enum Command {
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

fn duration(text: &str) -> Result<Duration, String> {
    volpool_api::units::parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let host_root = cli
        .host_root
        .unwrap_or_else(|| PathBuf::from(if in_pod { "/host" } else { "/" }));
    let probe = volumes::probe::ProbeConfig {
        timeout: cli.probe_timeout,
        workers: cli.probe_workers,
        max_threads: cli.max_probe_threads,
    };
    let (text, code) = match cli.command {
        Some(Command::CheckNfs {
            install,
            install_timeout,
            nfs_timeout,
            output,
        }) => nfs::cli::run(nfs::cli::CheckNfs {
            host_root,
            pools_file: cli.pools_file,
            install,
            install_timeout,
            config: nfs::NfsConfig {
                deadline: nfs_timeout,
                ..nfs::NfsConfig::default()
            },
            output,
        })?,
        Some(Command::Limits { output }) => limits::cli::run(limits::cli::Limits {
            host_root,
            node: cli.node_name,
            output,
        })?,
        Some(Command::Scrub {
            volume_id,
            method,
            output,
        }) => cleanup::cli::run(cleanup::cli::Scrub {
            host_root,
            pools_file: cli.pools_file.context("scrub needs --pools-file FILE")?,
            volume_id,
            method,
            output,
        })?,
        Some(Command::Scan { output }) => {
            volumes::cli::run(volumes::cli::ScanArgs {
                host_root,
                node: cli
                    .node_name
                    .or_else(|| host::commands::hostname().ok())
                    .unwrap_or_default(),
                pools_file: cli.pools_file.context(
                    "scan needs --pools-file FILE (a YAML stream of VolumePool objects)",
                )?,
                probe,
                output,
            })?;
            // NB: do not join the probe threads: one may be blocked on a hung mount.
            (String::new(), 0)
        }
        None => {
            let node = match (&cli.pools_file, cli.node_name) {
                (_, Some(node)) => node,
                (Some(_), None) => host::commands::hostname().unwrap_or_default(),
                (None, None) => anyhow::bail!(
                    "--node-name (or NODE_NAME) is required unless --pools-file is given"
                ),
            };
            let config = run::RunConfig {
                host_root,
                node,
                pools_file: cli.pools_file,
                metrics_addr: cli.metrics_addr,
                resync: cli.resync,
                probe,
                install_nfs_client: cli.install_nfs_client,
                install_timeout: cli.install_timeout,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            return Ok(runtime.block_on(run::run(config))?);
        }
    };
    print!("{text}");
    std::process::exit(code);
}
