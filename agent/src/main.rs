//! volpool-agent: the per-node DaemonSet. It discovers the mount points (and block devices) in
//! each local pool's discovery directory, measures them without ever hanging on a dead mount,
//! serves Prometheus metrics and publishes one `NodeVolumes` object per node, only on change.
//! `volpool-agent scan` does one scan and prints it, with no cluster needed.

mod cleanup;
mod cli;
mod cluster;
mod context;
mod error;
mod host;
mod http;
mod limits;
mod metrics;
mod network;
mod nfs;
mod output;
mod pools;
mod run;
mod runtime;
mod state;
mod volumes;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if cli.command.is_none() {
        runtime::exec_with_malloc_tunables();
    }
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
        Some(Command::CheckNetwork { pod_cidr, output }) => {
            network::cli::run(network::cli::CheckNetwork {
                config: cli.network.config(&host_root),
                node: cli.node_name.or_else(|| host::commands::hostname().ok()),
                pod_cidr,
                output,
            })?
        }
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
                network: cli.network.config(&host_root),
                network_interval: cli.network_interval,
                host_root,
                node,
                pools_file: cli.pools_file,
                metrics_addr: cli.metrics_addr,
                resync: cli.resync,
                probe,
                install_nfs_client: cli.install_nfs_client,
                install_timeout: cli.install_timeout,
            };
            let runtime = runtime::build()?;
            let result = runtime.block_on(run::run_until_stopped(config));
            // NB: a scrub or probe thread stuck on a hung mount must not hold the exit up.
            runtime.shutdown_background();
            return Ok(result?);
        }
    };
    print!("{text}");
    std::process::exit(code);
}
