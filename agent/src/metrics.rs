//! `/metrics`: a Prometheus collector that turns the latest [`Scan`] into text on each
//! scrape. A scrape reads the cached scan only; it never touches a mount.
//!
//! ```text
//!  scan loop ──► AgentState.scan (Arc<Scan>) ──► ScanCollector::collect ──► text exposition
//! ```

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, GaugeVec, Opts, Registry, TextEncoder};

use volpool_api::CheckStatus;

use crate::error::Result;
use crate::http::AgentState;
use crate::scan::entries_by_state;

const VOLUME: &[&str] = &["pool", "path", "volume_id", "persistentvolume"];
const PROBE: &[&str] = &["pool", "path"];

/// Every gauge the agent exports: (name, help, labels).
const GAUGES: &[(&str, &str, &[&str])] = &[
    (
        "volpool_volume_capacity_bytes",
        "Total size of the volume in bytes.",
        VOLUME,
    ),
    (
        "volpool_volume_available_bytes",
        "Bytes available to unprivileged users.",
        VOLUME,
    ),
    ("volpool_volume_used_bytes", "Bytes used.", VOLUME),
    ("volpool_volume_inodes", "Total inodes.", VOLUME),
    ("volpool_volume_inodes_free", "Free inodes.", VOLUME),
    (
        "volpool_volume_probe_success",
        "1 when the last statvfs of the mount answered without error.",
        PROBE,
    ),
    (
        "volpool_volume_stuck",
        "1 when statvfs of the mount did not answer within the probe timeout.",
        PROBE,
    ),
    (
        "volpool_volume_probe_duration_seconds",
        "Duration of the last statvfs of the mount (or how long it was waited for).",
        PROBE,
    ),
    (
        "volpool_discovery_entries",
        "Entries of discovery directories by state.",
        &["pool", "state"],
    ),
    (
        "volpool_agent_scan_duration_seconds",
        "Duration of the last full scan.",
        &[],
    ),
    (
        "volpool_agent_build_info",
        "Always 1; the agent's version is in the label.",
        &["version"],
    ),
    (
        "volpool_nfs_client_check",
        "NFS client prerequisite check: 1 OK, 0 NonOK, -1 Unknown.",
        &["check"],
    ),
    (
        "volpool_nfs_client_ready",
        "1 when every NFS client check the node's pools need is OK.",
        &[],
    ),
    (
        "volpool_nfs_server_reachable",
        "1 when the NFS pool's server answered every probe step and exports the path.",
        &["pool", "server"],
    ),
];

/// Renders the latest scan on each scrape.
pub struct ScanCollector {
    state: Arc<AgentState>,
    descs: Vec<Desc>,
}

fn gauges() -> Result<Vec<GaugeVec>> {
    GAUGES
        .iter()
        .map(|(name, help, labels)| Ok(GaugeVec::new(Opts::new(*name, *help), labels)?))
        .collect()
}

impl ScanCollector {
    /// A collector over the agent's shared state.
    pub fn new(state: Arc<AgentState>) -> Result<Self> {
        let descs = gauges()?
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned())
            .collect();
        Ok(ScanCollector { state, descs })
    }

    fn fill(&self, g: &[GaugeVec]) {
        let scan = self.state.scan();
        for u in &scan.usage {
            let labels = [
                u.pool.as_str(),
                u.path.as_str(),
                u.volume_id.as_str(),
                u.persistent_volume.as_str(),
            ];
            g[0].with_label_values(&labels).set(u.capacity as f64);
            if let Some(fs) = u.fs {
                g[1].with_label_values(&labels).set(fs.available as f64);
                g[2].with_label_values(&labels).set(fs.used as f64);
                g[3].with_label_values(&labels).set(fs.inodes as f64);
                g[4].with_label_values(&labels).set(fs.inodes_free as f64);
            }
        }
        for p in &scan.probes {
            let labels = [p.pool.as_str(), p.path.as_str()];
            g[5].with_label_values(&labels)
                .set(f64::from(u8::from(p.success)));
            g[6].with_label_values(&labels)
                .set(f64::from(u8::from(p.stuck)));
            g[7].with_label_values(&labels).set(p.seconds);
        }
        for ((pool, state), n) in entries_by_state(&scan.volumes) {
            g[8].with_label_values(&[pool.as_str(), &format!("{state:?}")])
                .set(n as f64);
        }
        if self.state.scanned() {
            g[9].with_label_values(&[] as &[&str])
                .set(scan.duration.as_secs_f64());
        }
        g[10]
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        if let Some(nfs) = self.state.nfs.get() {
            for c in &nfs.checks {
                let value = match c.status {
                    CheckStatus::OK => 1.0,
                    CheckStatus::NonOK => 0.0,
                    CheckStatus::Unknown => -1.0,
                };
                g[11].with_label_values(&[c.name.as_str()]).set(value);
            }
            g[12]
                .with_label_values(&[] as &[&str])
                .set(f64::from(u8::from(nfs.ready)));
            for s in &nfs.servers {
                g[13]
                    .with_label_values(&[s.pool.as_str(), s.server.as_str()])
                    .set(f64::from(u8::from(s.reachable)));
            }
        }
    }
}

impl Collector for ScanCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match gauges() {
            Ok(g) => {
                self.fill(&g);
                g.iter().flat_map(|g| g.collect()).collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot build metrics");
                Vec::new()
            }
        }
    }
}

/// A registry holding the scan collector.
pub fn registry(state: Arc<AgentState>) -> Result<Registry> {
    let registry = Registry::new();
    registry.register(Box::new(ScanCollector::new(state)?))?;
    Ok(registry)
}

/// The text exposition of everything in `registry`.
pub fn render(registry: &Registry) -> Result<String> {
    let mut buf = Vec::with_capacity(64 * 1024);
    TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
