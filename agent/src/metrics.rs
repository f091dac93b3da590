//! `/metrics`: the latest [`Scan`] as Prometheus text, plus a collector for the small,
//! node-wide families (build info, NFS client, scrubs under way). A scrape reads cached data only; it never
//! touches a mount.
//!
//! ```text
//!  scan loop ──► render_scan (once per scan) ──► AgentState.scan_text ──┐
//!  NFS loop  ──► AgentState.nfs ──► ScanCollector::collect (per scrape) ─┴─► GET /metrics
//! ```
//!
//! NB: the per-volume families are written by hand, once per scan: through `GaugeVec`s and the
//! text encoder they took ~85 ms per scrape at 1,000 volumes. Only `volpool_volume_info` names
//! a volume; the figures carry its `volume` key (the kube-state-metrics pattern: queries join
//! with `* on (node, volume) group_left (pool, path) volpool_volume_info`), which keeps a
//! scrape of 1,000 volumes under half the bytes of one that repeats every label.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, GaugeVec, Opts, Registry, TextEncoder};

use volpool_api::CheckStatus;

use crate::error::Result;
use crate::state::AgentState;
use crate::volumes::scan::{Measured, Scan, entries_by_state};

/// One family written by hand: its name and help.
struct Family {
    name: &'static str,
    help: &'static str,
}

impl Family {
    /// The `# HELP` and `# TYPE` lines.
    fn header(&self, out: &mut String) {
        let Family { name, help } = self;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    }
}

// The identity of each measured or probed entry, labelled volume (the key), pool, path,
// volume_id, persistentvolume; every other per-volume family is labelled volume only.
const INFO: Family = Family {
    name: "volpool_volume_info",
    help: "Always 1; who the volume is. Join on volume (and node) for pool, path, volume_id and persistentvolume.",
};
const CAPACITY: Family = Family {
    name: "volpool_volume_capacity_bytes",
    help: "Total size of the volume in bytes.",
};
const AVAILABLE: Family = Family {
    name: "volpool_volume_available_bytes",
    help: "Bytes available to unprivileged users.",
};
const USED: Family = Family {
    name: "volpool_volume_used_bytes",
    help: "Bytes used.",
};
const INODES: Family = Family {
    name: "volpool_volume_inodes",
    help: "Total inodes.",
};
const INODES_FREE: Family = Family {
    name: "volpool_volume_inodes_free",
    help: "Free inodes.",
};
// Mount points only.
const PROBE_SUCCESS: Family = Family {
    name: "volpool_volume_probe_success",
    help: "1 when the last statvfs of the mount answered without error.",
};
const STUCK: Family = Family {
    name: "volpool_volume_stuck",
    help: "1 when statvfs of the mount did not answer within the probe timeout.",
};
const PROBE_DURATION: Family = Family {
    name: "volpool_volume_probe_duration_seconds",
    help: "Duration of the last statvfs of the mount (or how long it was waited for).",
};
// Labelled pool, state.
const DISCOVERY_ENTRIES: Family = Family {
    name: "volpool_discovery_entries",
    help: "Entries of discovery directories by state.",
};
const SCAN_DURATION: Family = Family {
    name: "volpool_agent_scan_duration_seconds",
    help: "Duration of the last full scan.",
};

/// The figure a per-volume family shows for an entry (`None`: no sample).
type Figure = fn(&Measured) -> Option<f64>;

/// The node-wide gauges of the collector, built afresh for each scrape.
struct NodeGauges {
    build_info: GaugeVec,
    nfs_client_check: GaugeVec,
    nfs_client_ready: GaugeVec,
    nfs_server_reachable: GaugeVec,
    cleanup_running: GaugeVec,
}

impl NodeGauges {
    fn new() -> Result<Self> {
        let gauge =
            |name: &str, help: &str, labels: &[&str]| GaugeVec::new(Opts::new(name, help), labels);
        Ok(NodeGauges {
            build_info: gauge(
                "volpool_agent_build_info",
                "Always 1; the agent's version is in the label.",
                &["version"],
            )?,
            nfs_client_check: gauge(
                "volpool_nfs_client_check",
                "NFS client prerequisite check: 1 OK, 0 NonOK, -1 Unknown.",
                &["check"],
            )?,
            nfs_client_ready: gauge(
                "volpool_nfs_client_ready",
                "1 when every NFS client check the node's pools need is OK.",
                &[],
            )?,
            nfs_server_reachable: gauge(
                "volpool_nfs_server_reachable",
                "1 when the NFS pool's server answered every probe step and exports the path.",
                &["pool", "server"],
            )?,
            cleanup_running: gauge(
                "volpool_cleanup_running_seconds",
                "How long each scrub under way has been running (a hung mount keeps it growing).",
                &["persistentvolume", "volume_id"],
            )?,
        })
    }

    fn all(&self) -> [&GaugeVec; 5] {
        [
            &self.build_info,
            &self.nfs_client_check,
            &self.nfs_client_ready,
            &self.nfs_server_reachable,
            &self.cleanup_running,
        ]
    }

    /// Set the gauges from `state`.
    fn fill(&self, state: &AgentState) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        if let Some(nfs) = state.nfs.get() {
            for c in &nfs.checks {
                let value = match c.status {
                    CheckStatus::OK => 1.0,
                    CheckStatus::NonOK => 0.0,
                    CheckStatus::Unknown => -1.0,
                };
                self.nfs_client_check
                    .with_label_values(&[c.name.as_str()])
                    .set(value);
            }
            self.nfs_client_ready
                .with_label_values(&[] as &[&str])
                .set(f64::from(u8::from(nfs.ready)));
            for s in &nfs.servers {
                self.nfs_server_reachable
                    .with_label_values(&[s.pool.as_str(), s.server.as_str()])
                    .set(f64::from(u8::from(s.reachable)));
            }
        }
        let now = SystemTime::now();
        for scrub in state.scrubs.list() {
            let age = now.duration_since(scrub.since).unwrap_or_default();
            self.cleanup_running
                .with_label_values(&[scrub.persistent_volume.as_str(), scrub.volume_id.as_str()])
                .set(age.as_secs_f64());
        }
    }
}

/// Renders the node-wide families on each scrape.
pub struct ScanCollector {
    state: Arc<AgentState>,
    descs: Vec<Desc>,
}

impl ScanCollector {
    /// A collector over the agent's shared state.
    pub fn new(state: Arc<AgentState>) -> Result<Self> {
        let descs = NodeGauges::new()?
            .all()
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned())
            .collect();
        Ok(ScanCollector { state, descs })
    }
}

impl Collector for ScanCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match NodeGauges::new() {
            Ok(g) => {
                g.fill(&self.state);
                g.all().iter().flat_map(|g| g.collect()).collect()
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

/// The per-volume families of `scan` as Prometheus text: one `volpool_volume_info` series
/// per entry carries its identity, the figures carry only its key.
pub fn render_scan(scan: &Scan) -> String {
    let keys = volume_keys(&scan.measured);
    // NB: sized up front (and shrunk at the end): the text is kept until the next scan, and a
    // doubled buffer would keep up to twice its size.
    let names: usize = scan
        .measured
        .iter()
        .map(|m| m.pool.len() + m.path.len() + m.volume_id.len() + m.persistent_volume.len())
        .sum();
    let mut out = String::with_capacity(4096 + names + scan.measured.len() * 480);
    INFO.header(&mut out);
    for (m, key) in scan.measured.iter().zip(&keys) {
        let _ = writeln!(
            out,
            "{}{{volume=\"{key}\",pool=\"{}\",path=\"{}\",volume_id=\"{}\",persistentvolume=\"{}\"}} 1",
            INFO.name,
            escape(&m.pool),
            escape(&m.path),
            escape(&m.volume_id),
            escape(&m.persistent_volume)
        );
    }
    let figures: [(&Family, Figure); 8] = [
        (&CAPACITY, |m| bytes(m.capacity)),
        (&AVAILABLE, |m| bytes(m.fs.map(|f| f.available))),
        (&USED, |m| bytes(m.fs.map(|f| f.used))),
        (&INODES, |m| bytes(m.fs.map(|f| f.inodes))),
        (&INODES_FREE, |m| bytes(m.fs.map(|f| f.inodes_free))),
        (&PROBE_SUCCESS, |m| {
            m.probe.map(|p| f64::from(u8::from(p.success)))
        }),
        (&STUCK, |m| m.probe.map(|p| f64::from(u8::from(p.stuck)))),
        // NB: microseconds are plenty, and the shorter text is most of this family's bytes.
        (&PROBE_DURATION, |m| {
            m.probe.map(|p| (p.seconds * 1e6).round() / 1e6)
        }),
    ];
    for (family, figure) in figures {
        family.header(&mut out);
        for (m, key) in scan.measured.iter().zip(&keys) {
            if let Some(v) = figure(m) {
                let _ = writeln!(out, "{}{{volume=\"{key}\"}} {v}", family.name);
            }
        }
    }
    DISCOVERY_ENTRIES.header(&mut out);
    for ((pool, state), n) in entries_by_state(&scan.volumes) {
        let _ = writeln!(
            out,
            "{}{{pool=\"{}\",state=\"{state:?}\"}} {n}",
            DISCOVERY_ENTRIES.name,
            escape(&pool)
        );
    }
    SCAN_DURATION.header(&mut out);
    let _ = writeln!(
        out,
        "{} {}",
        SCAN_DURATION.name,
        scan.duration.as_secs_f64()
    );
    out.shrink_to_fit();
    out
}

/// A byte or inode count as a sample value (exact below 2^53).
fn bytes(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

/// The `volume` label of each entry: 8 hex digits of a hash of its pool and path, the same
/// for the same pool and path in every scan and agent version; 16 for entries whose 8 would
/// collide with another entry's on this node, so the key is unique and the join exact.
fn volume_keys(measured: &[Measured]) -> Vec<String> {
    let hashes: Vec<u64> = measured
        .iter()
        .map(|m| stable_hash([m.pool.as_bytes(), &[0], m.path.as_bytes()]))
        .collect();
    let mut short: HashMap<u32, usize> = HashMap::new();
    for h in &hashes {
        *short.entry(short_hash(*h)).or_default() += 1;
    }
    hashes
        .iter()
        .map(|h| match short.get(&short_hash(*h)) {
            Some(1) => format!("{:08x}", short_hash(*h)),
            _ => format!("{h:016x}"),
        })
        .collect()
}

/// The upper half of a 64-bit hash.
fn short_hash(h: u64) -> u32 {
    (h >> 32) as u32
}

/// 64-bit FNV-1a over `parts`, then MurmurHash3's finalizer, so paths that differ in one
/// character differ in every digit: stable across builds and platforms, unlike `std`'s
/// hashers.
fn stable_hash<const N: usize>(parts: [&[u8]; N]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.into_iter().flatten() {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Escape a label value for the text format: backslash, double quote and newline.
pub(crate) fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FsUsage;
    use crate::volumes::scan::ProbeRecord;
    use volpool_testkit::metrics::{matching, volume_sample};

    fn measured(path: &str) -> Measured {
        Measured {
            pool: "p".into(),
            path: path.into(),
            volume_id: "uuid:1".into(),
            persistent_volume: "p-n-vol-0123abcd".into(),
            ..Measured::default()
        }
    }

    #[test]
    fn figures_join_the_info_series_on_their_volume_key() {
        let odd = "/mnt/disks/my \"vol\"\\x";
        let scan = Scan {
            measured: vec![
                Measured {
                    capacity: Some(1 << 20),
                    fs: Some(FsUsage {
                        size: 1 << 20,
                        available: 1000,
                        used: 24,
                        inodes: 7,
                        inodes_free: 5,
                    }),
                    probe: Some(ProbeRecord {
                        success: true,
                        stuck: false,
                        seconds: 0.000_012_345,
                    }),
                    ..measured(odd)
                },
                Measured {
                    probe: Some(ProbeRecord {
                        success: false,
                        stuck: true,
                        seconds: 2.0,
                    }),
                    ..measured("/mnt/disks/hung")
                },
            ],
            ..Scan::default()
        };
        let text = render_scan(&scan);
        assert!(
            text.contains(r#"path="/mnt/disks/my \"vol\"\\x",volume_id="uuid:1",persistentvolume="p-n-vol-0123abcd"} 1"#),
            "{text}"
        );
        let figure = |metric, path| volume_sample(&text, metric, path);
        assert_eq!(
            figure("volpool_volume_capacity_bytes", odd),
            Some(1048576.0)
        );
        assert_eq!(figure("volpool_volume_inodes_free", odd), Some(5.0));
        assert_eq!(
            figure("volpool_volume_probe_duration_seconds", odd),
            Some(0.000_012)
        );
        assert_eq!(figure("volpool_volume_stuck", "/mnt/disks/hung"), Some(1.0));
        assert_eq!(
            figure("volpool_volume_capacity_bytes", "/mnt/disks/hung"),
            None
        );
        // Only the info series names the volume.
        for sample in matching(&text, "volpool_volume_stuck", &[]) {
            assert!(sample.labels.starts_with("volume=\"") && !sample.labels.contains(','));
        }
        assert!(
            text.contains("# TYPE volpool_agent_scan_duration_seconds gauge\n"),
            "{text}"
        );
    }

    #[test]
    fn volume_keys_are_stable_and_unique() {
        let a = measured("/mnt/disks/a");
        let b = measured("/mnt/disks/b");
        let keys = volume_keys(&[a.clone(), b.clone()]);
        assert_eq!(keys, volume_keys(&[a.clone(), b]));
        assert_eq!(keys[0], volume_keys(&[a])[0]);
        assert_ne!(keys[0], keys[1]);
        assert_eq!(keys[0].len(), 8);
        // Two entries whose short keys collide both get the long one.
        let many: Vec<Measured> = (0..200_000)
            .map(|i| measured(&format!("/mnt/disks/v{i}")))
            .collect();
        let keys = volume_keys(&many);
        let unique: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert!(
            keys.iter().any(|k| k.len() == 16),
            "no collision among 200,000 keys"
        );
    }
}
