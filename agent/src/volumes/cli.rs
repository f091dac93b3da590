//! `volpool-agent scan`: one scan of the `--pools-file` pools, printed as the `NodeVolumes`
//! status this node would publish, for people (table) or programs (json, yaml). No cluster.
//!
//! ```text
//!  --pools-file ─► select ─┐
//!  --host-root ─► RealHost ┴► scan ─► status_of ─► render ─► stdout (problems, hung mounts ─► stderr)
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use super::probe::ProbeConfig;
use super::{prober, scan, status_of};
use crate::error::Result;
use crate::host::RealHost;
use crate::output::{self, Format};
use crate::pools;

/// What `scan` was asked to do.
pub struct ScanArgs {
    /// The node's root.
    pub host_root: PathBuf,
    /// This node's name (in the PV names of the report).
    pub node: String,
    /// The pools to scan.
    pub pools_file: PathBuf,
    /// Probe pool sizing and deadline.
    pub probe: ProbeConfig,
    /// Output format.
    pub output: Format,
}

/// Run `scan`: the report on stdout, warnings on stderr.
pub fn run(args: ScanArgs) -> Result<()> {
    let selected = pools::select(&pools::read_pools_file(&args.pools_file)?, None);
    let host = Arc::new(RealHost::new(&args.host_root));
    let scan = scan::scan(
        host.as_ref(),
        &prober(host.clone(), args.probe),
        &selected,
        &args.node,
    )?;
    for problem in &scan.problems {
        eprintln!("warning: {problem}");
    }
    print!(
        "{}",
        output::render(&status_of(host.as_ref(), &scan), args.output)?
    );
    let blocked = scan
        .measured
        .iter()
        .filter(|m| m.probe.is_some_and(|p| p.stuck))
        .count();
    if blocked > 0 {
        eprintln!(
            "warning: statvfs is blocked on {blocked} hung mount(s); this process ends when those calls return"
        );
    }
    Ok(())
}
