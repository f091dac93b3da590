//! Output of `volpool-agent scan`: the NodeVolumes status as JSON, YAML or a table for people.

use serde::Serialize;
use volpool_api::units::human_bytes;
use volpool_api::{NodeVolumesStatus, VolumeState};

use crate::error::{Error, Result};

/// How `scan` prints its report.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// A table, one line per entry.
    Table,
    /// The status as JSON.
    Json,
    /// The status as YAML.
    Yaml,
}

/// Render `status` in `format`.
pub fn render(status: &NodeVolumesStatus, format: Format) -> Result<String> {
    encode(status, format, table).map_err(|(format, reason)| Error::EncodeReport { format, reason })
}

/// Encode `value` as JSON or YAML, or as a table drawn by `table`. On failure, returns the
/// format's name and the reason, for the caller's own error type.
pub fn encode<T: Serialize>(
    value: &T,
    format: Format,
    table: impl FnOnce(&T) -> String,
) -> std::result::Result<String, (&'static str, String)> {
    match format {
        Format::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| ("json", e.to_string())),
        Format::Yaml => serde_yaml::to_string(value).map_err(|e| ("yaml", e.to_string())),
        Format::Table => Ok(table(value)),
    }
}

/// A table of checks: name, status and message, one row each.
pub fn checks_table(checks: &[volpool_api::Check]) -> String {
    let mut rows = vec![["CHECK", "STATUS", "MESSAGE"].map(String::from).to_vec()];
    for c in checks {
        rows.push(vec![
            c.name.clone(),
            format!("{:?}", c.status),
            c.message.clone(),
        ]);
    }
    columns(&rows)
}

/// Lay `rows` out in columns two spaces apart; the first row is the header.
pub fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn table(status: &NodeVolumesStatus) -> String {
    let mut rows = vec![
        [
            "POOL",
            "PATH",
            "STATE",
            "CAPACITY",
            "FSTYPE",
            "DEVICE",
            "VOLUME ID",
            "MESSAGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for v in &status.volumes {
        let capacity = match v.state {
            VolumeState::Ready | VolumeState::TooSmall => human_bytes(v.capacity_bytes),
            _ => "-".into(),
        };
        rows.push(vec![
            v.pool.clone(),
            v.path.escape_debug().to_string(),
            format!("{:?}", v.state),
            capacity,
            dash(&v.fs_type),
            dash(&v.device),
            dash(&v.volume_id),
            v.message.clone(),
        ]);
    }
    let mut out = columns(&rows);
    if status.volumes.is_empty() {
        out.push_str("(no entries: no local pool's discovery directory has any)\n");
    } else {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for v in &status.volumes {
            let state = format!("{:?}", v.state);
            match counts.iter_mut().find(|(s, _)| *s == state) {
                Some((_, n)) => *n += 1,
                None => counts.push((state, 1)),
            }
        }
        let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        out.push_str(&format!(
            "\n{} entries: {}\n",
            status.volumes.len(),
            summary.join(", ")
        ));
    }
    out
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}
