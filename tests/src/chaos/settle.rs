//! When is the system settled, and is it then idle? Settled: the apiserver answers, a running
//! replica holds the Lease, every node's agent has published a report for the Node as it is
//! now that shows each mounted disk Ready with its identity, and the NFS export is reachable.
//! Idle: nothing the soak watches changes for a while, and then the leader's passes write
//! nothing (`volpool_controller_api_writes_total`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use volpool_api::VolumeState;
use volpool_testkit::metrics;

use super::bed::Bed;
use super::world::World;
use crate::controller::Controller;
use crate::pool::pool_condition;

/// Quiet this long before an idle pass is measured.
const QUIET: Duration = Duration::from_secs(5);
/// Passes measured.
const PASSES: f64 = 3.0;

/// Why the world is not settled yet (`None`: settled).
pub async fn unsettled(bed: &Bed, world: &World) -> anyhow::Result<Option<String>> {
    let Some(leader) = bed.leader().await? else {
        return Ok(Some("no replica holds the Lease".into()));
    };
    if !bed
        .controllers
        .iter()
        .flatten()
        .any(|c| c.identity == leader)
    {
        return Ok(Some(format!("the Lease holder {leader} is not running")));
    }
    for ((node, path), id) in &world.disks {
        let Some(node_uid) = world.nodes.get(node) else {
            return Ok(Some(format!("Node {node} does not exist")));
        };
        let status = world.reports.get(node).and_then(|r| r.status.clone());
        let Some(status) = status.filter(|s| &s.node_uid == node_uid) else {
            return Ok(Some(format!("no report of {node} for its Node {node_uid}")));
        };
        let entry = status.volumes.iter().find(|v| &v.path == path);
        let shown = entry.is_some_and(|v| match id {
            Some(id) => v.state == VolumeState::Ready && &v.volume_id == id,
            None => v.state != VolumeState::Ready,
        });
        if !shown {
            return Ok(Some(format!(
                "{node} reports {path} as {entry:?}, the disk there is {id:?}"
            )));
        }
    }
    let unreachable = pool_condition(&bed.client, &bed.nfs_pool(), "ExportUnreachable")
        .await?
        .is_none_or(|c| c.status != "False");
    Ok(unreachable.then(|| "the NFS export is not known to be reachable".into()))
}

/// Wait until nothing the soak watches has changed for [`QUIET`]; `Err` with what kept
/// changing when that does not happen within `timeout`.
pub async fn quiet(bed: &Bed, timeout: Duration) -> anyhow::Result<Result<(), String>> {
    let deadline = Instant::now() + timeout;
    let mut last = World::observe(bed).await?.versions();
    let mut since = Instant::now();
    let mut changed = Vec::new();
    while Instant::now() < deadline {
        if since.elapsed() >= QUIET {
            return Ok(Ok(()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = World::observe(bed).await?.versions();
        if now != last {
            changed = now.iter().filter(|v| !last.contains(v)).cloned().collect();
            last = now;
            since = Instant::now();
        }
    }
    Ok(Err(format!(
        "still changing after {timeout:?}: {changed:?}"
    )))
}

/// The API writes the leader makes during [`PASSES`] passes, by verb and resource.
pub async fn idle_writes(leader: &Controller) -> anyhow::Result<BTreeMap<String, f64>> {
    let writes = |text: &str| -> BTreeMap<String, f64> {
        metrics::matching(text, "volpool_controller_api_writes_total", &[])
            .map(|s| (s.labels.to_string(), s.value))
            .collect()
    };
    let before = writes(&leader.get("/metrics").await?.1);
    let start = leader
        .metric("volpool_controller_reconcile_duration_seconds_count", &[])
        .await?;
    crate::wait_for("idle passes", Duration::from_secs(60), || async {
        let now = leader
            .metric("volpool_controller_reconcile_duration_seconds_count", &[])
            .await?;
        Ok((now >= start + PASSES).then_some(()))
    })
    .await?;
    let after = writes(&leader.get("/metrics").await?.1);
    Ok(after
        .into_iter()
        .map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0.0);
            (k, d)
        })
        .filter(|(_, d)| *d > 0.0)
        .collect())
}
