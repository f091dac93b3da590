//! Controller metrics (prefix `volpool_`), as listed in `docs/architecture.md` ("Metrics"):
//! pool volumes and bytes by phase, leadership, pass duration, errors by category, API writes by
//! verb and resource, scrub durations, Pending claims by pool and claims' time from creation to
//! Bound. `volpool_pool_info{pool,storage_class}` and
//! `volpool_pool_min_available{pool}` let the alert rules join claims to pools and see the
//! watermark. Label values are always bounded names, never error texts.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts,
    Registry, TextEncoder,
};
use std::collections::BTreeMap;

use volpool_api::VolumePool;

use crate::error::Error;
use crate::plan::nfs::ExportView;

/// Every controller metric, in one registry.
pub struct Metrics {
    registry: Registry,
    pool_volumes: GaugeVec,
    pool_capacity: GaugeVec,
    pool_info: GaugeVec,
    pool_min_available: GaugeVec,
    pool_claims_pending: GaugeVec,
    claim_bind: HistogramVec,
    export_size: GaugeVec,
    export_available: GaugeVec,
    leader: Gauge,
    reconcile: Histogram,
    errors: IntCounterVec,
    writes: IntCounterVec,
    cleanup: HistogramVec,
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let metrics = Metrics {
            pool_volumes: GaugeVec::new(
                Opts::new("volpool_pool_volumes", "PVs of a pool by phase"),
                &["pool", "phase"],
            )?,
            pool_capacity: GaugeVec::new(
                Opts::new(
                    "volpool_pool_capacity_bytes",
                    "Bytes of a pool's PVs by phase",
                ),
                &["pool", "phase"],
            )?,
            pool_info: GaugeVec::new(
                Opts::new(
                    "volpool_pool_info",
                    "1 for every pool, labelled with its StorageClass (joins claims to pools)",
                ),
                &["pool", "storage_class"],
            )?,
            pool_min_available: GaugeVec::new(
                Opts::new(
                    "volpool_pool_min_available",
                    "Available PVs an NFS pool keeps (spec.nfs.minAvailable)",
                ),
                &["pool"],
            )?,
            pool_claims_pending: GaugeVec::new(
                Opts::new(
                    "volpool_pool_claims_pending",
                    "Pending claims of a pool's StorageClass",
                ),
                &["pool"],
            )?,
            claim_bind: HistogramVec::new(
                HistogramOpts::new(
                    "volpool_claim_bind_seconds",
                    "From a claim's creation to Bound, as the controller observes it",
                )
                .buckets(vec![1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
                &["pool"],
            )?,
            export_size: GaugeVec::new(
                Opts::new(
                    "volpool_pool_export_size_bytes",
                    "Size of an NFS pool's export (FSSTAT)",
                ),
                &["pool"],
            )?,
            export_available: GaugeVec::new(
                Opts::new(
                    "volpool_pool_export_available_bytes",
                    "Bytes available on an NFS pool's export (FSSTAT)",
                ),
                &["pool"],
            )?,
            leader: Gauge::new(
                "volpool_controller_leader",
                "1 while this replica holds the leader Lease",
            )?,
            reconcile: Histogram::with_opts(
                HistogramOpts::new(
                    "volpool_controller_reconcile_duration_seconds",
                    "Duration of one plan-and-apply pass",
                )
                .buckets(vec![0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?,
            errors: IntCounterVec::new(
                Opts::new("volpool_controller_errors_total", "Errors by category"),
                &["category"],
            )?,
            writes: IntCounterVec::new(
                Opts::new(
                    "volpool_controller_api_writes_total",
                    "API writes by verb and resource",
                ),
                &["verb", "resource"],
            )?,
            cleanup: HistogramVec::new(
                HistogramOpts::new(
                    "volpool_cleanup_duration_seconds",
                    "From release to the end of the scrub",
                )
                .buckets(vec![1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
                &["pool", "result"],
            )?,
            registry,
        };
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(metrics.pool_volumes.clone()),
            Box::new(metrics.pool_capacity.clone()),
            Box::new(metrics.pool_info.clone()),
            Box::new(metrics.pool_min_available.clone()),
            Box::new(metrics.pool_claims_pending.clone()),
            Box::new(metrics.export_size.clone()),
            Box::new(metrics.export_available.clone()),
            Box::new(metrics.leader.clone()),
            Box::new(metrics.reconcile.clone()),
            Box::new(metrics.errors.clone()),
            Box::new(metrics.writes.clone()),
            Box::new(metrics.cleanup.clone()),
            Box::new(metrics.claim_bind.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector)?;
        }
        Ok(metrics)
    }

    /// Count an error.
    pub fn error(&self, e: &Error) {
        self.errors.with_label_values(&[e.category()]).inc();
    }

    /// Count an API write.
    pub fn write(&self, verb: &str, resource: &str) {
        self.writes.with_label_values(&[verb, resource]).inc();
    }

    /// Record a pass.
    pub fn pass(&self, seconds: f64) {
        self.reconcile.observe(seconds);
    }

    /// Record a finished scrub.
    pub fn cleanup(&self, pool: &str, result: &str, seconds: f64) {
        self.cleanup
            .with_label_values(&[pool, result])
            .observe(seconds);
    }

    /// Record a claim seen Bound, `seconds` after its creation.
    pub fn claim_bound(&self, pool: &str, seconds: f64) {
        self.claim_bind.with_label_values(&[pool]).observe(seconds);
    }

    /// Set leadership.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(if leader { 1.0 } else { 0.0 });
    }

    /// Set the pool gauges from the pools' statuses (pools gone disappear).
    pub fn set_pools<'a>(&self, pools: impl Iterator<Item = &'a VolumePool>) {
        self.pool_volumes.reset();
        self.pool_capacity.reset();
        self.pool_info.reset();
        self.pool_min_available.reset();
        self.pool_claims_pending.reset();
        for pool in pools {
            let Some(name) = pool.metadata.name.as_deref() else {
                continue;
            };
            self.pool_info
                .with_label_values(&[name, pool.spec.storage_class_name.as_str()])
                .set(1.0);
            if let Some(nfs) = &pool.spec.nfs {
                self.pool_min_available
                    .with_label_values(&[name])
                    .set(f64::from(nfs.min_available));
            }
            let Some(status) = pool.status.as_ref() else {
                continue;
            };
            self.pool_claims_pending
                .with_label_values(&[name])
                .set(f64::from(status.claims.pending));
            let v = &status.volumes;
            for (phase, n) in [
                ("available", v.available),
                ("bound", v.bound),
                ("released", v.released),
                ("cleaning", v.cleaning),
                ("unhealthy", v.unhealthy),
            ] {
                self.pool_volumes
                    .with_label_values(&[name, phase])
                    .set(f64::from(n));
            }
            let c = &status.capacity_bytes;
            for (phase, bytes) in [("available", c.available), ("bound", c.bound)] {
                self.pool_capacity
                    .with_label_values(&[name, phase])
                    .set(bytes as f64);
            }
        }
    }

    /// Set the export gauges from this pass's reads (an unread export has no sample).
    pub fn set_exports(&self, views: &BTreeMap<String, ExportView>) {
        self.export_size.reset();
        self.export_available.reset();
        for (pool, view) in views {
            if let Some(space) = &view.space {
                self.export_size
                    .with_label_values(&[pool.as_str()])
                    .set(space.size_bytes as f64);
                self.export_available
                    .with_label_values(&[pool.as_str()])
                    .set(space.available_bytes as f64);
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %e, "failed to encode metrics");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_joinable_to_their_class_and_nfs_pools_show_their_watermark() {
        let metrics = Metrics::new().expect("metrics register");
        let pools: Vec<VolumePool> = serde_yaml::from_str(
            "- metadata: {name: fast}\n  spec: {storageClassName: fast-disks, local: {discoveryDir: /mnt/disks}}\n\
             - metadata: {name: shared}\n  spec: {storageClassName: nfs, nfs: {server: s, path: /p, minAvailable: 4}}\n",
        )
        .expect("pools parse");
        metrics.set_pools(pools.iter());
        let text = metrics.render();
        assert!(
            text.contains(r#"volpool_pool_info{pool="fast",storage_class="fast-disks"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"volpool_pool_info{pool="shared",storage_class="nfs"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"volpool_pool_min_available{pool="shared"} 4"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"volpool_pool_min_available{pool="fast"}"#),
            "{text}"
        );
        metrics.set_pools(std::iter::empty());
        assert!(
            !metrics.render().contains("pool=\"fast\""),
            "gone pools disappear"
        );
    }
}
