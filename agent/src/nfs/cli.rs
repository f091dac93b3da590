//! `volpool-agent check-nfs`: the checks and server probes once, printed for people (table) or
//! programs (json, yaml); with `--install`, the installer first when the client is missing.
//! Exit status: 0 ready, 1 not ready, 2 the install failed or was refused.
//!
//! ```text
//!  --pools-file ─► select ─┐
//!  --host-root ─► RealHost ┴► evaluate ─► (install ─► evaluate) ─► render ─► stdout
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use volpool_api::NfsClientStatus;

use super::error::NfsError;
use super::install::{self, StepOutput};
use super::{NfsConfig, evaluate, missing, select};
use crate::host::RealHost;
use crate::output::{Format, checks_table, columns};
use crate::pools::read_pools_file;

/// What `check-nfs` was asked to do.
pub struct CheckNfs {
    /// The node's root.
    pub host_root: PathBuf,
    /// NFS pools to probe the servers of (all of them; no node labels standalone).
    pub pools_file: Option<PathBuf>,
    /// Install the client when it is missing.
    pub install: bool,
    /// Deadline of each install command.
    pub install_timeout: Duration,
    /// Network deadlines.
    pub config: NfsConfig,
    /// Output format.
    pub output: Format,
}

/// What `check-nfs` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The status the agent would publish.
    #[serde(flatten)]
    pub status: NfsClientStatus,
    /// The install steps run, with their output.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub install: Vec<StepOutput>,
    /// Why the install failed or was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install_error: Option<String>,
}

/// Run `check-nfs`; returns the text to print and the exit status.
pub fn run(args: CheckNfs) -> Result<(String, i32), NfsError> {
    let pools = match &args.pools_file {
        Some(file) => select(&read_pools_file(file)?, None),
        None => Vec::new(),
    };
    let host = RealHost::new(&args.host_root);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| NfsError::StartCommand {
            command: "tokio runtime".into(),
            source,
        })?;
    let report = runtime.block_on(async {
        let mut status = evaluate(&host, &pools, args.config).await;
        let mut report = Report {
            status: NfsClientStatus::default(),
            install: Vec::new(),
            install_error: None,
        };
        if args.install && missing(&status) {
            match install::install(&host, args.install_timeout).await {
                Ok(steps) => {
                    report.install = steps;
                    status = evaluate(&host, &pools, args.config).await;
                }
                Err(e) => report.install_error = Some(e.to_string()),
            }
        }
        report.status = status;
        report
    });
    let code = if report.install_error.is_some() {
        2
    } else if report.status.ready {
        0
    } else {
        1
    };
    Ok((render(&report, args.output)?, code))
}

/// Render the report.
pub fn render(report: &Report, format: Format) -> Result<String, NfsError> {
    crate::output::encode(report, format, table)
        .map_err(|(format, reason)| NfsError::EncodeReport { format, reason })
}

fn table(report: &Report) -> String {
    let mut out = String::new();
    for step in &report.install {
        out.push_str(&format!("$ {}\n{}\n", step.command, step.output.trim_end()));
    }
    if let Some(e) = &report.install_error {
        out.push_str(&format!("install failed: {e}\n"));
    }
    out.push_str(&checks_table(&report.status.checks));
    if !report.status.servers.is_empty() {
        let mut rows = vec![
            ["POOL", "SERVER", "REACHABLE", "EXPORTS", "MESSAGE"]
                .map(String::from)
                .to_vec(),
        ];
        for s in &report.status.servers {
            rows.push(vec![
                s.pool.clone(),
                s.server.clone(),
                if s.reachable { "yes" } else { "no" }.into(),
                if s.exports.is_empty() {
                    "-".into()
                } else {
                    s.exports.join(",")
                },
                s.message.clone(),
            ]);
        }
        out.push('\n');
        out.push_str(&columns(&rows));
    }
    let ready = if report.status.ready { "yes" } else { "no" };
    out.push_str(&format!("\nNFS client ready: {ready}\n"));
    out
}
