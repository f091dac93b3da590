//! volpool-controller: keeps the PersistentVolume inventory of every VolumePool true.
//!
//! ```text
//!  watches ──► stores ──► plan (pure) ──► apply (leader only) ──► PVs, NodeVolumes.spec, status, Events
//! ```

#![forbid(unsafe_code)]

mod error;
mod offline;
mod plan;
mod status;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// volpool pool controller.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print what the controller would write for these pools and reports, without a cluster.
    Plan {
        /// VolumePools (YAML documents, a List, or a JSON array).
        #[arg(long)]
        pools_file: PathBuf,
        /// NodeVolumes reports.
        #[arg(long)]
        reports_file: PathBuf,
        /// Existing PersistentVolumes.
        #[arg(long)]
        pvs_file: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "yaml")]
        output: offline::Format,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Some(Command::Plan {
            pools_file,
            reports_file,
            pvs_file,
            output,
        }) => {
            print!(
                "{}",
                offline::run(&pools_file, &reports_file, pvs_file.as_deref(), output)?
            );
            Ok(())
        }
        None => anyhow::bail!("not yet"),
    }
}
