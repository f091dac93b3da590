//! volpool-controller: the central Deployment. Its features land with the controller issues;
//! for now it only states its version and refuses to pretend to work.

use clap::Parser;

/// volpool pool controller: turns VolumePools and the nodes' NodeVolumes reports into a true
/// inventory of ready PersistentVolumes.
#[derive(Parser)]
#[command(version)]
struct Args {}

fn main() -> anyhow::Result<()> {
    Args::parse();
    anyhow::bail!("volpool-controller {} does not run yet: PV planning is not built", env!("CARGO_PKG_VERSION"))
}
