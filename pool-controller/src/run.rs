//! The controller loop: wait for a change (or a timer), and — on the leader only — run a pass
//! (`pass.rs`: snapshot, plan, apply, wait until the stores show the writes).
//!
//! ```text
//!  watch event / timer / leadership change
//!        └─► pass (leader) ─► next pass at once if it wrote
//! ```
//!
//! A pass that finds nothing to do writes nothing, so an idle cluster costs no API writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};

use crate::apply::Applier;
use crate::error::{Error, Result};
use crate::http::{self, Health};
use crate::lease::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::pass::Passes;
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
    /// Plan every node at least this often (other passes plan only the nodes that changed).
    pub full_resync: Duration,
    /// Concurrent API writes.
    pub concurrency: usize,
}

/// Let a burst of watch events land before planning.
const DEBOUNCE: Duration = Duration::from_millis(100);

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
    let mut passes = Passes::new(options.full_resync);
    let mut wake = options.resync;
    let mut was_leading = false;
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
        if leading && !was_leading {
            passes.plan_everything();
        }
        was_leading = leading;
        if leading {
            wake = passes.run(&stores, &applier, &metrics, wake).await;
        }
    }
    tracing::info!("shutting down");
    metrics.set_leader(false);
    let _ = shutdown.send(true);
    let _ = lease_task.await;
    Ok(())
}
