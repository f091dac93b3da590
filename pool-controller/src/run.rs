//! The controller loop: wait for a change (or a timer), snapshot the stores, plan, and — on
//! the leader only — apply, then wait until the stores show the writes.
//!
//! ```text
//!  watch event / timer / leadership change
//!        └─► snapshot ─► plan ─► apply (leader) ─► stores caught up ─► next pass at once if it wrote
//! ```
//!
//! A pass that finds nothing to do writes nothing, so an idle cluster costs no API writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};

use crate::apply::Applier;
use crate::error::{Error, Result};
use crate::exportfs::{self, Exports};
use crate::http::{self, Health};
use crate::lease::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::plan::{claims, plan};
use crate::world::Stores;

/// How the controller runs.
pub struct Options {
    /// Listen address of `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: String,
    /// Leader election.
    pub lease: LeaseConfig,
    /// Label selector limiting the VolumePools this controller plans.
    pub pool_selector: Option<String>,
    /// Plan at least this often even when nothing changes.
    pub resync: Duration,
    /// Concurrent API writes.
    pub concurrency: usize,
}

/// Let a burst of watch events land before planning.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Wait at most this long for the stores to show a pass's writes.
const CATCH_UP: Duration = Duration::from_secs(30);
/// Retry sooner than the resync after failed writes.
const RETRY: Duration = Duration::from_secs(2);

/// Run until SIGTERM or SIGINT.
pub async fn run(client: Client, options: Options) -> Result<()> {
    let metrics = Arc::new(Metrics::new()?);
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let _http = http::serve(&options.metrics_addr, health).await?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|source| Error::InstallSignalHandler {
            signal: "SIGTERM",
            source,
        })?;

    let notify = Arc::new(Notify::new());
    let stores = Stores::start(
        &client,
        options.pool_selector.as_deref(),
        notify.clone(),
        metrics.clone(),
    );
    tokio::select! {
        _ = stores.ready() => {}
        _ = terminate.recv() => return Ok(()),
        _ = tokio::signal::ctrl_c() => return Ok(()),
    }
    ready.store(true, Ordering::Relaxed);
    tracing::info!("watches synced");

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (mut leader, lease_task) = lease::spawn(client.clone(), options.lease.clone(), shutdown_rx);
    let applier = Applier::new(
        client,
        options.lease.identity.clone(),
        metrics.clone(),
        options.concurrency,
    );
    let mut exports = Exports::default();
    let mut explained = BTreeMap::new();
    let mut binding = claims::Binding::default();
    let mut wake = options.resync;
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wake) => {}
            _ = leader.changed() => {}
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        tokio::time::sleep(DEBOUNCE).await;
        let leading = *leader.borrow();
        metrics.set_leader(leading);
        wake = options.resync;
        if !leading {
            continue;
        }
        let started = Instant::now();
        let now = Timestamp::now();
        let mut world = stores.snapshot(now);
        metrics.set_pools(world.pools.iter().map(AsRef::as_ref));
        for (pool, seconds) in binding.observe(&world) {
            metrics.claim_bound(&pool, seconds);
        }
        // NB: what older passes told the claims, so a claim hears each reason once per
        // EXPLAIN_EVERY rather than once per pass.
        explained.retain(|_, at: &mut Timestamp| {
            Duration::try_from(now.duration_since(*at)).is_ok_and(|d| d < claims::EXPLAIN_EVERY)
        });
        world.explained = explained.clone();
        // NFS pools: read the exports (no write) so the plan sees them; then make or remove
        // directories; a PV change that needs a directory waits for it.
        world.exports = exportfs::observe(&world, &mut exports).await;
        metrics.set_exports(&world.exports);
        let plan = plan(&world);
        drop(world);
        explained.extend(plan.explained.iter().map(|key| (key.clone(), now)));
        let mut changes = plan.changes;
        let export_ops = plan.ops.len();
        let executed = exportfs::execute(&mut exports, plan.ops).await;
        for error in &executed.failed {
            metrics.error(error);
        }
        changes.extend(executed.changes);
        if let Some(after) = plan.wake_after {
            wake = wake.min(after);
        }
        let planned = changes.len() + export_ops;
        let mut applied = applier.apply(changes).await;
        applied.failed += executed.failed.len();
        if !applied.written.is_empty() && !stores.caught_up(&applied.written, CATCH_UP).await {
            tracing::warn!("the watches did not show this pass's writes in time");
        }
        metrics.pass(started.elapsed().as_secs_f64());
        if planned > 0 {
            tracing::info!(
                writes = planned,
                failed = applied.failed,
                seconds = started.elapsed().as_secs_f64(),
                "pass applied"
            );
        }
        if applied.failed > 0 {
            wake = wake.min(RETRY);
        } else if planned > 0 {
            // NB: a pass that wrote plans again at once: its writes may enable more (a deleted
            // PV is recreated, statuses count the new PVs).
            wake = Duration::ZERO;
        }
    }
    tracing::info!("shutting down");
    metrics.set_leader(false);
    let _ = shutdown.send(true);
    let _ = lease_task.await;
    Ok(())
}
