//! One full scan: mount table → discovery of every local pool → probes → a [`Scan`], the data
//! that both `NodeVolumes.status.volumes` and `/metrics` are made from.
//!
//! ```text
//!  Host ──mountinfo──► discovery (per pool) ──mount points──► Prober (statvfs, deadlines)
//!                                   │ block devices: sysfs size      │
//!                                   └────────────► reports + usage ◄─┘──► Scan
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use volpool_api::units::human_bytes;
use volpool_api::{VolumeReport, VolumeState, local_pv_name};

use super::discovery::{Found, discover};
use super::identity;
use super::probe::{ProbeOutcome, Prober};
use crate::error::Result;
use crate::host::{FsUsage, Host, Mount};
use crate::pools::LocalPool;

/// What `/metrics` shows of one entry that was measured (it has a size) or probed (a mount
/// point): who it is, once, and its figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    /// The pool.
    pub pool: String,
    /// Host path.
    pub path: String,
    /// Its volume ID (empty when it has none).
    pub volume_id: String,
    /// The name its PV has (or will have).
    pub persistent_volume: String,
    /// Total bytes; `None` when it could not be measured.
    pub capacity: Option<u64>,
    /// statvfs figures; `None` for block devices and unanswered probes.
    pub fs: Option<FsUsage>,
    /// How the statvfs of a mount point went; `None` for block devices.
    pub probe: Option<ProbeRecord>,
}

/// How the probe of one mount point went, for metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeRecord {
    /// statvfs answered without error.
    pub success: bool,
    /// statvfs did not answer in time.
    pub stuck: bool,
    /// How long the probe took (or was waited for).
    pub seconds: f64,
}

/// The result of one scan.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Every entry of every pool, sorted by pool and path.
    pub volumes: Vec<VolumeReport>,
    /// The entries that were measured or probed, sorted by pool and path.
    pub measured: Vec<Measured>,
    /// Problems with whole pools (a missing discovery dir), for the log.
    pub problems: Vec<String>,
    /// How long the scan took.
    pub duration: Duration,
}

/// Scan every pool once. Fails only when the mount table cannot be read; everything else
/// becomes an entry's state and message.
pub fn scan(host: &dyn Host, prober: &Prober, pools: &[LocalPool], node: &str) -> Result<Scan> {
    let start = Instant::now();
    let mounts = host.mount_table()?;
    let mut out = Scan::default();
    let mut found = Vec::new();
    for pool in pools {
        match discover(host, &mounts, pool) {
            Ok(entries) => found.extend(entries.into_iter().map(|e| (pool, e))),
            Err(problem) => out.problems.push(problem),
        }
    }

    // NB: two pools may share a directory; each mount point is probed once.
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    let mut paths = Vec::new();
    for (_, entry) in &found {
        if matches!(entry.found, Found::Mount(_)) && !index.contains_key(&entry.path) {
            index.insert(entry.path.clone(), paths.len());
            paths.push(entry.path.clone());
        }
    }
    let outcomes = prober.probe_all(&paths);

    for (pool, entry) in found {
        let path = entry.path.to_string_lossy().into_owned();
        let mut report = VolumeReport {
            pool: pool.name.clone(),
            volume_id: String::new(),
            path: path.clone(),
            volume_mode: pool.mode,
            fs_type: String::new(),
            device: String::new(),
            capacity_bytes: 0,
            state: VolumeState::Ready,
            message: String::new(),
        };
        let mut size = None;
        let mut fs = None;
        let mut probe = None;
        match entry.found {
            Found::Mount(mount) => {
                let outcome = index.get(&entry.path).and_then(|i| outcomes.get(*i));
                let (usage, success, stuck, seconds) =
                    mount_report(host, &mount, outcome, &mut report);
                size = usage.map(|u| u.size);
                fs = usage;
                probe = Some(ProbeRecord {
                    success,
                    stuck,
                    seconds,
                });
            }
            Found::Block { dev, device } => {
                report.volume_id = identity::block_id(host, dev, &device);
                report.device = device.to_string_lossy().into_owned();
                match identity::block_size(host, dev) {
                    Ok(bytes) => size = Some(bytes),
                    Err(e) => {
                        report.state = VolumeState::Error;
                        report.message = format!("cannot read the device size from sysfs: {e}");
                    }
                }
            }
            Found::Rejected { state, message } => {
                report.state = state;
                report.message = message;
            }
        }
        if let Some(bytes) = size {
            report.capacity_bytes = bytes;
            if bytes < pool.min_capacity {
                report.state = VolumeState::TooSmall;
                report.message = format!(
                    "{} ({bytes} bytes) is below the pool's minCapacity of {}",
                    human_bytes(bytes),
                    human_bytes(pool.min_capacity)
                );
            }
        }
        if size.is_some() || probe.is_some() {
            out.measured.push(Measured {
                pool: pool.name.clone(),
                path,
                persistent_volume: local_pv_name(&pool.name, node, &entry.name, &report.volume_id),
                volume_id: report.volume_id.clone(),
                capacity: size,
                fs,
                probe,
            });
        }
        out.volumes.push(report);
    }
    out.volumes
        .sort_by(|a, b| (&a.pool, &a.path).cmp(&(&b.pool, &b.path)));
    out.measured
        .sort_by(|a, b| (&a.pool, &a.path).cmp(&(&b.pool, &b.path)));
    out.duration = start.elapsed();
    Ok(out)
}

/// Fill `report` from a mount point's identity and probe outcome. Returns its statvfs
/// figures (when the probe answered) and, for metrics, whether the probe succeeded, whether
/// it is stuck and how long it took.
fn mount_report(
    host: &dyn Host,
    mount: &Mount,
    outcome: Option<&ProbeOutcome>,
    report: &mut VolumeReport,
) -> (Option<FsUsage>, bool, bool, f64) {
    report.volume_id = identity::filesystem_id(host, mount);
    report.fs_type = mount.fs_type.clone();
    if mount.source.starts_with("/dev/") {
        report.device = mount.source.clone();
    }
    match outcome {
        Some(ProbeOutcome::Done {
            result: Ok(usage),
            took,
        }) => (Some(*usage), true, false, took.as_secs_f64()),
        Some(ProbeOutcome::Done {
            result: Err(e),
            took,
        }) => {
            report.state = VolumeState::Error;
            report.message = format!("statvfs failed: {e}");
            (None, false, false, took.as_secs_f64())
        }
        Some(ProbeOutcome::Stuck { message, waited }) => {
            report.state = VolumeState::Stuck;
            report.message = message.clone();
            (None, false, true, waited.as_secs_f64())
        }
        None => (None, false, false, 0.0),
    }
}

/// Count of entries by (pool, state), for `volpool_discovery_entries`.
pub fn entries_by_state(volumes: &[VolumeReport]) -> Vec<((String, VolumeState), u64)> {
    let mut counts: HashMap<(String, VolumeState), u64> = HashMap::new();
    for v in volumes {
        *counts.entry((v.pool.clone(), v.state)).or_default() += 1;
    }
    let mut out: Vec<_> = counts.into_iter().collect();
    out.sort_by(|a, b| (&a.0.0, format!("{:?}", a.0.1)).cmp(&(&b.0.0, format!("{:?}", b.0.1))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FileKind;
    use crate::host::fixture::FixtureHost;
    use crate::volumes::probe::ProbeConfig;
    use std::sync::Arc;
    use volpool_api::VolumeMode;

    fn pool(name: &str, dir: &str, mode: VolumeMode, min: u64) -> LocalPool {
        LocalPool {
            name: name.into(),
            dir: dir.into(),
            mode,
            pattern: glob::Pattern::new("*").expect("glob"),
            min_capacity: min,
        }
    }

    #[test]
    fn every_entry_gets_a_state_from_a_captured_node() {
        let host = Arc::new(
            FixtureHost::new("host", "mountinfo")
                .with_stat("/mnt/disks/plain", FileKind::Dir, (0, 0))
                .with_stat("/mnt/disks/lost+found", FileKind::Dir, (0, 0))
                .with_stat("/mnt/disks/stray.txt", FileKind::File, (0, 0))
                .with_usage(
                    "/mnt/disks/vol1",
                    FsUsage {
                        size: 60 << 20,
                        available: 50 << 20,
                        used: 1 << 20,
                        inodes: 16384,
                        inodes_free: 16373,
                    },
                )
                .with_usage(
                    "/mnt/disks/my vol",
                    FsUsage {
                        size: 10 << 20,
                        ..FsUsage::default()
                    },
                )
                .with_usage(
                    "/mnt/disks/bind1",
                    FsUsage {
                        size: 8 << 30,
                        ..FsUsage::default()
                    },
                ),
        );
        let probe_host = host.clone();
        let prober = Prober::new(
            ProbeConfig {
                timeout: Duration::from_millis(200),
                workers: 2,
                max_threads: 4,
            },
            Arc::new(move |p: &std::path::Path| probe_host.statvfs(p)),
        );
        let pools = [pool("fast", "/mnt/disks", VolumeMode::Filesystem, 20 << 20)];
        let scan = scan(host.as_ref(), &prober, &pools, "node-1").expect("scan");
        let states: Vec<(&str, VolumeState)> = scan
            .volumes
            .iter()
            .map(|v| (v.path.as_str(), v.state))
            .collect();
        assert_eq!(
            states,
            [
                ("/mnt/disks/bind1", VolumeState::Ready),
                ("/mnt/disks/lost+found", VolumeState::NotMountPoint),
                ("/mnt/disks/my vol", VolumeState::TooSmall),
                ("/mnt/disks/plain", VolumeState::NotMountPoint),
                ("/mnt/disks/stray.txt", VolumeState::NotMountPoint),
                ("/mnt/disks/tab\there", VolumeState::Error),
                ("/mnt/disks/vol1", VolumeState::Ready),
            ]
        );
        let vol1 = &scan.volumes[6];
        assert_eq!(
            (
                vol1.capacity_bytes,
                vol1.fs_type.as_str(),
                vol1.device.as_str()
            ),
            (60 << 20, "ext4", "/dev/loop0")
        );
        assert!(
            scan.volumes
                .iter()
                .all(|v| v.state == VolumeState::Ready || !v.message.is_empty())
        );
        let measured = scan
            .measured
            .iter()
            .find(|u| u.path == "/mnt/disks/vol1")
            .expect("measured");
        assert_eq!(
            measured.persistent_volume,
            local_pv_name("fast", "node-1", "vol1", &vol1.volume_id)
        );
        assert_eq!(
            scan.measured.iter().filter(|m| m.probe.is_some()).count(),
            4
        );
    }
}
