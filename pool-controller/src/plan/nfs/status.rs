//! The status of an NFS pool: counts, ready nodes, the export's space, and the conditions
//! `ExportUnreachable`, `ExportFull`, `RootSquashed` and `NoReadyNodes` (each keeps its
//! `lastTransitionTime` while its status holds, so an idle pass writes nothing).

use std::collections::HashMap;

use volpool_api::units::parse_bytes;
use volpool_api::{ExportSpace, NfsSource, VolumePool, VolumePoolStatus};

use super::ExportView;
use volpool_api::optional_selector_matches;

use crate::plan::select::name_of;
use crate::plan::status::{self, Counted, Problem};
use crate::plan::world::World;

/// The status the pool should have.
pub fn status(
    world: &World,
    pool: &VolumePool,
    nfs: &NfsSource,
    view: &ExportView,
    counted: &Counted,
    mut problems: Vec<Problem>,
) -> VolumePoolStatus {
    let nodes = ready_nodes(world, pool);
    let conditions = nfs_conditions(nfs, view, nodes, &mut problems);
    let mut status = status::pool_status(pool, counted, nodes, None, &problems, world.now);
    let (old, generation) = status::observed(pool);
    for (type_, holds, reason, message) in conditions {
        let state = if holds { "True" } else { "False" };
        status.conditions.push(status::condition(
            old,
            type_,
            state,
            reason.into(),
            message,
            generation,
            world.now,
        ));
    }
    status.export = match (
        &view.space,
        pool.status.as_ref().and_then(|s| s.export.as_ref()),
    ) {
        (Some(space), _) => Some(rounded(space)),
        // NB: an unreachable export keeps its last known space rather than churn the status.
        (None, old) => old.cloned(),
    };
    status
}

/// Available bytes rounded down to 1% of the size, so a busy export does not rewrite the
/// status on every pass (the metrics carry the exact values).
fn rounded(space: &ExportSpace) -> ExportSpace {
    let step = (space.size_bytes / 100).max(1);
    ExportSpace {
        size_bytes: space.size_bytes,
        available_bytes: space.available_bytes / step * step,
    }
}

/// Nodes whose agents report a ready NFS client that reaches this pool's server, among the
/// known nodes matching the pool's `nodeSelector`.
pub fn ready_nodes(world: &World, pool: &VolumePool) -> u32 {
    let name = name_of(pool);
    let nodes: HashMap<&str, _> = world.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut ready = 0;
    for report in &world.reports {
        let Some(node) = report.metadata.name.as_deref().and_then(|n| nodes.get(n)) else {
            continue;
        };
        let Some(client) = report.status.as_ref().and_then(|s| s.nfs_client.as_ref()) else {
            continue;
        };
        let reaches = client
            .servers
            .iter()
            .find(|s| s.pool == name)
            .is_none_or(|s| s.reachable);
        if client.ready
            && reaches
            && optional_selector_matches(pool.spec.node_selector.as_ref(), node.labels.as_ref())
        {
            ready += 1;
        }
    }
    ready
}

type Cond = (&'static str, bool, &'static str, String);

/// ExportUnreachable, ExportFull, RootSquashed and NoReadyNodes; each that holds is also a
/// problem (so `Degraded` says it).
fn nfs_conditions(
    nfs: &NfsSource,
    view: &ExportView,
    nodes: u32,
    problems: &mut Vec<Problem>,
) -> Vec<Cond> {
    let server = format!("{}:{}", nfs.server, nfs.path);
    let mut out: Vec<Cond> = Vec::new();
    let mut add = |type_: &'static str, problem: Option<String>, fine: String| match problem {
        Some(message) => {
            problems.push(Problem::new(type_, message.clone()));
            out.push((type_, true, type_, message));
        }
        None => out.push((type_, false, "AsExpected", fine)),
    };
    add(
        "ExportUnreachable",
        view.unreachable.as_ref().map(|m| {
            format!(
                "cannot reach export {server}: {m}; no PV is created or deleted until it answers"
            )
        }),
        format!("export {server} answers"),
    );
    let volume = parse_bytes(&nfs.volume_size).unwrap_or_default();
    add(
        "ExportFull",
        view.space.as_ref().filter(|s| s.available_bytes < volume).map(|s| {
            format!(
                "export {server} has {} bytes available, less than one volume ({}): claims bound to these PVs will run out of space; free space or grow the export",
                s.available_bytes, nfs.volume_size
            )
        }),
        "the export has room for at least one more volume".into(),
    );
    let squashed = view.denied.clone().or_else(|| {
        let expected = view.expected_uid?;
        let (dir, seen) = view.dirs.iter().find(|(_, d)| d.uid != expected)?;
        Some(format!("{dir} is owned by uid {}", seen.uid))
    });
    add(
        "RootSquashed",
        squashed.map(|why| {
            format!(
                "the server maps the controller's root to another user ({why}): it cannot set the directories' owner or mode as root; export {server} with no_root_squash (knfsd: /etc/exports) or Squash = No_Root_Squash (nfs-ganesha)"
            )
        }),
        "the controller acts as root on the export".into(),
    );
    add(
        "NoReadyNodes",
        (nodes == 0).then(|| {
            let affinity = if nfs.nfs_client_affinity {
                "pods using these PVs cannot be scheduled (nodeAffinity volpool.io/nfs-client=ready)"
            } else {
                "mounts may fail where the NFS client is missing"
            };
            format!("no node matching the pool reports a ready NFS client reaching {server}: {affinity}; see the agents' NodeVolumes status.nfsClient")
        }),
        format!("{nodes} nodes report a ready NFS client"),
    );
    out
}
