//! One pass of the leader: take the nodes that changed, snapshot the stores, read the NFS
//! exports, plan (every node, or only the changed ones), carry out directory work and writes,
//! then wait until the stores show the writes.
//!
//! ```text
//!  Dirty nodes ──► Scope ─┐
//!  stores ──► World ──────┼─► plan_pass (+ LocalParts of earlier passes) ──► apply ──► caught up
//!  exports ──► views ─────┘                       └─► nodes with writes: planned again next pass
//! ```
//!
//! A pass plans every node when a watch listed again, on the first pass of a leadership, and at
//! least every `--full-resync`; otherwise only the nodes whose report, Node or PVs changed
//! since the last pass, and those whose last plan wrote or waits for a grace period. A pass
//! over a few nodes costs what changed, not the number of PVs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use crate::apply::Applier;
use crate::exportfs::{self, Exports};
use crate::metrics::Metrics;
use crate::plan::{LocalParts, Scope, claims, plan_pass};
use crate::world::Stores;

/// Wait at most this long for the stores to show a pass's writes.
const CATCH_UP: Duration = Duration::from_secs(30);
/// Retry sooner than the resync after failed writes.
const RETRY: Duration = Duration::from_secs(2);

/// What passes remember.
pub struct Passes {
    exports: Exports,
    explained: BTreeMap<(String, String), Timestamp>,
    binding: claims::Binding,
    parts: LocalParts,
    full_every: Duration,
    last_full: Option<Instant>,
}

impl Passes {
    /// Passes that plan every node at least every `full_every`.
    pub fn new(full_every: Duration) -> Passes {
        Passes {
            exports: Exports::default(),
            explained: BTreeMap::new(),
            binding: claims::Binding::default(),
            parts: LocalParts::default(),
            full_every,
            last_full: None,
        }
    }

    /// The next pass will plan every node (leadership was gained).
    pub fn plan_everything(&mut self) {
        self.last_full = None;
    }

    /// Run one pass; returns when to look again at the latest (`wake`, sooner after failed
    /// writes, at once after writes).
    pub async fn run(
        &mut self,
        stores: &Stores,
        applier: &Applier,
        metrics: &Metrics,
        wake: Duration,
    ) -> Duration {
        let started = Instant::now();
        let now = Timestamp::now();
        let dirty = stores.take_dirty();
        let full = dirty.all
            || self
                .last_full
                .is_none_or(|t| t.elapsed() >= self.full_every);
        let scope = if full {
            self.last_full = Some(started);
            Scope::All
        } else {
            Scope::Nodes(dirty.nodes)
        };
        let mut world = stores.snapshot(now);
        metrics.set_pools(world.pools.iter().map(AsRef::as_ref));
        for (pool, seconds) in self.binding.observe(&world, &stores.pv_view()) {
            metrics.claim_bound(&pool, seconds);
        }
        // NB: what older passes told the claims, so a claim hears each reason once per
        // EXPLAIN_EVERY rather than once per pass.
        self.explained.retain(|_, at| {
            Duration::try_from(now.duration_since(*at)).is_ok_and(|d| d < claims::EXPLAIN_EVERY)
        });
        world.explained = self.explained.clone();
        // NFS pools: read the exports (no write) so the plan sees them; then make or remove
        // directories; a PV change that needs a directory waits for it.
        world.exports = exportfs::observe(&world, &mut self.exports).await;
        metrics.set_exports(&world.exports);
        let (plan, busy) = plan_pass(&world, &stores.pv_view(), &scope, &mut self.parts);
        drop(world);
        let planned_in = started.elapsed().as_secs_f64();
        stores.mark_dirty(busy);
        let explained = plan.explained.iter().map(|key| (key.clone(), now));
        self.explained.extend(explained);
        let mut changes = plan.changes;
        let export_ops = plan.ops.len();
        let executed = exportfs::execute(&mut self.exports, plan.ops).await;
        for error in &executed.failed {
            metrics.error(error);
        }
        changes.extend(executed.changes);
        let mut wake = wake;
        if let Some(after) = plan.wake_after {
            wake = wake.min(after);
        }
        let planned = changes.len() + export_ops;
        let mut applied = applier.apply(changes).await;
        applied.failed += executed.failed.len();
        if !applied.written.is_empty() && !stores.caught_up(&applied.written, CATCH_UP).await {
            tracing::warn!("the watches did not show this pass's writes in time");
        }
        let seconds = started.elapsed().as_secs_f64();
        metrics.pass(seconds);
        let nodes = match &scope {
            Scope::All => "all".to_string(),
            Scope::Nodes(nodes) => nodes.len().to_string(),
        };
        tracing::debug!(
            nodes,
            writes = planned,
            plan_seconds = planned_in,
            seconds,
            "pass"
        );
        if planned > 0 {
            tracing::info!(
                writes = planned,
                failed = applied.failed,
                seconds,
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
        wake
    }
}
