//! `chaos [--minutes M] [--seed S] [--nodes N]`: the chaos soak against the cluster in
//! `$KUBECONFIG` (`tests/chaos/run` builds it and brings a cluster up when none is given).
//! The last line is `chaos: <F> faults, <C> invariant checks, <V> violations`; the exit status
//! is 1 when V > 0.

use std::process::ExitCode;

use clap::Parser;
use volpool_e2e::chaos::bed::DISKS;
use volpool_e2e::chaos::fault::{Scope, schedule};
use volpool_e2e::chaos::{Options, run};

#[derive(Parser)]
#[command(about = "volpool's chaos soak: faults from a seed, invariants checked after each")]
struct Args {
    /// Minutes of faults.
    #[arg(long, default_value_t = 2.0)]
    minutes: f64,
    /// Seed of the fault schedule and the load (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Fake nodes (2 or 3).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Print the first N steps of the seed's schedule (as on a cluster `tests/cluster/up`
    /// made) and exit.
    #[arg(long, value_name = "N")]
    print_schedule: Option<usize>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    if let Some(steps) = args.print_schedule {
        let scope = Scope {
            nodes: args.nodes.clamp(1, 3),
            disks: DISKS.len(),
            control_plane: true,
        };
        for (i, step) in schedule(seed, steps, scope).iter().enumerate() {
            println!("{i:3}. {step}");
        }
        return ExitCode::SUCCESS;
    }
    let opts = Options {
        minutes: args.minutes,
        seed,
        nodes: args.nodes.clamp(1, 3),
    };
    match run(opts).await {
        Ok(s) => {
            println!(
                "chaos: {} faults, {} invariant checks, {} violations",
                s.faults, s.checks, s.violations
            );
            if s.violations > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            println!("chaos: the soak could not run: {e:#}");
            println!("chaos: 0 faults, 0 invariant checks, 1 violations");
            ExitCode::FAILURE
        }
    }
}
