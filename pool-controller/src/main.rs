//! volpool-controller: keeps the PersistentVolume inventory of every VolumePool true.
//!
//! ```text
//!  watches ──► stores ──► plan (pure) ──► apply (leader only) ──► PVs, NodeVolumes.spec, status, Events
//! ```

mod apply;
mod error;
mod exportfs;
mod http;
mod lease;
mod metrics;
mod offline;
mod pass;
mod plan;
mod run;
mod world;

use std::time::Duration;

use clap::{Parser, Subcommand};

/// volpool pool controller: turns VolumePools and the nodes' NodeVolumes reports into a true
/// inventory of ready PersistentVolumes.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Listen address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9811")]
    metrics_addr: String,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "volpool-system")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "volpool-controller")]
    lease_name: String,
    /// This replica's identity in the Lease and in Events (default: hostname-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a leader's Lease holds without renewal.
    #[arg(long, default_value = "10s", value_parser = duration)]
    lease_duration: Duration,
    /// Only plan VolumePools matching this label selector.
    #[arg(long)]
    pool_selector: Option<String>,
    /// Plan at least this often when nothing changes.
    #[arg(long, default_value = "60s", value_parser = duration)]
    resync: Duration,
    /// Plan every node at least this often; other passes plan only the nodes whose report,
    /// Node or PVs changed.
    #[arg(long, default_value = "10m", value_parser = duration)]
    full_resync: Duration,
    /// Concurrent API writes.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Print what the controller would write for these pools and reports, without a cluster.
    Plan(offline::PlanArgs),
}

fn duration(text: &str) -> Result<Duration, String> {
    volpool_api::units::parse_duration(text).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Plan(plan)) = &args.command {
        print!("{}", offline::run(plan)?);
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let identity = args
        .identity
        .unwrap_or_else(|| format!("{}-{}", hostname.trim(), std::process::id()));
    let lease = lease::LeaseConfig {
        namespace: args.lease_namespace,
        name: args.lease_name,
        identity,
        duration: args.lease_duration,
        retry: (args.lease_duration / 5).max(Duration::from_millis(500)),
    };
    let client = kube::Client::try_default().await?;
    let options = run::Options {
        metrics_addr: args.metrics_addr,
        lease,
        pool_selector: args.pool_selector,
        resync: args.resync,
        full_resync: args.full_resync,
        concurrency: args.concurrency,
    };
    run::run(client, options).await?;
    Ok(())
}
