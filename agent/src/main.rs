//! volpool-agent: the per-node DaemonSet. Its features land with the agent issues; for now it
//! only states its version and refuses to pretend to work.

use clap::Parser;

/// volpool node agent (DaemonSet): discovers mount points, measures them, checks NFS client
/// prerequisites and workload limits, and publishes one NodeVolumes object per node.
#[derive(Parser)]
#[command(version)]
struct Args {}

fn main() -> anyhow::Result<()> {
    Args::parse();
    anyhow::bail!("volpool-agent {} does not run yet: node discovery is not built", env!("CARGO_PKG_VERSION"))
}
