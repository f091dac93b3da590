//! The invariants, as pure functions of a [`World`]: each returns what breaks it, with the
//! state that shows it. The marks (sentinels and canaries, [`super::marks`]), the logs and the
//! idle pass are judged elsewhere; the names of all of them are here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolume;
use volpool_api::{ANNOTATION_PATH, LABEL_HEALTH, LABEL_NODE, VolumeState};

use super::world::World;
use crate::controller::{claim_ref, label, phase};
use crate::nfs::pv_dir;

/// No two PVs for one volume identity.
pub const ONE_PV_PER_VOLUME: &str = "one PV per volume identity";
/// A PV's path and identity agree with the disk there (or it says why not).
pub const PV_MATCHES_DISK: &str = "PV agrees with the disk at its path";
/// Sentinels in Bound volumes survive.
pub const NO_BYTE_LOST: &str = "no byte lost from a Bound volume";
/// Only Released volumes are scrubbed.
pub const ONLY_RELEASED_SCRUBBED: &str = "nothing scrubbed that was not Released";
/// Available PVs point at Ready volumes.
pub const AVAILABLE_IS_READY: &str = "every Available PV points at a Ready volume";
/// NFS directories and PVs match.
pub const DIRS_MATCH_PVS: &str = "no NFS directory without a PV, no PV without its directory";
/// A claim is Bound to one PV.
pub const ONE_PV_PER_CLAIM: &str = "no claim Bound to two PVs";
/// No panics.
pub const NO_PANIC: &str = "no panic in any log";
/// Idle passes write nothing.
pub const IDLE_WRITES_NOTHING: &str = "after settling an idle pass makes 0 writes";

/// The full volume identity the controller wrote on a PV.
pub const ANNOTATION_VOLUME_ID: &str = "volpool.io/volume-id";
/// UID of the Node a local PV's volume was found on.
pub const ANNOTATION_NODE_UID: &str = "volpool.io/node-uid";

/// One broken invariant.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Which.
    pub invariant: &'static str,
    /// The state that breaks it.
    pub state: String,
}

fn violation(invariant: &'static str, state: String) -> Violation {
    Violation { invariant, state }
}

/// A PV's name.
pub fn name(pv: &PersistentVolume) -> &str {
    pv.metadata.name.as_deref().unwrap_or_default()
}

/// A PV's UID.
pub fn uid(pv: &PersistentVolume) -> &str {
    pv.metadata.uid.as_deref().unwrap_or_default()
}

/// A PV's annotation.
pub fn annotation<'a>(pv: &'a PersistentVolume, key: &str) -> Option<&'a str> {
    pv.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The short state of a PV for a report: name, uid, phase, claim, health, identity, path.
pub fn describe(pv: &PersistentVolume) -> String {
    let claim = claim_ref(pv).map(|c| {
        format!(
            "{}/{} ({})",
            c.namespace.as_deref().unwrap_or_default(),
            c.name.as_deref().unwrap_or_default(),
            c.uid.as_deref().unwrap_or_default()
        )
    });
    format!(
        "PV {} uid={} phase={} claim={} health={} id={} path={} deleting={}",
        name(pv),
        uid(pv),
        phase(pv).unwrap_or("-"),
        claim.as_deref().unwrap_or("-"),
        label(pv, LABEL_HEALTH).unwrap_or("-"),
        annotation(pv, ANNOTATION_VOLUME_ID).unwrap_or("-"),
        annotation(pv, ANNOTATION_PATH).unwrap_or("-"),
        pv.metadata.deletion_timestamp.is_some()
    )
}

/// The safety invariants, true at every moment: one PV per identity, one PV per claim, scrubs
/// asked only for Released PVs.
pub fn safety(world: &World) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut by_id: BTreeMap<(String, &str), Vec<&PersistentVolume>> = BTreeMap::new();
    for pv in world.pvs() {
        let pool = label(pv, volpool_api::LABEL_POOL).unwrap_or_default();
        if let Some(id) = annotation(pv, ANNOTATION_VOLUME_ID) {
            by_id.entry((pool.to_string(), id)).or_default().push(pv);
        }
    }
    for ((_, id), pvs) in by_id.iter().filter(|(_, pvs)| pvs.len() > 1) {
        let list: Vec<String> = pvs.iter().map(|p| describe(p)).collect();
        out.push(violation(
            ONE_PV_PER_VOLUME,
            format!("{id}:\n  {}", list.join("\n  ")),
        ));
    }
    let mut by_claim: BTreeMap<&str, Vec<&PersistentVolume>> = BTreeMap::new();
    for pv in world.pvs().filter(|p| phase(p) == Some("Bound")) {
        if let Some(claim) = claim_ref(pv).and_then(|c| c.uid.as_deref()) {
            by_claim.entry(claim).or_default().push(pv);
        }
    }
    for (claim, pvs) in by_claim.iter().filter(|(_, pvs)| pvs.len() > 1) {
        let list: Vec<String> = pvs.iter().map(|p| describe(p)).collect();
        out.push(violation(
            ONE_PV_PER_CLAIM,
            format!("claim {claim}:\n  {}", list.join("\n  ")),
        ));
    }
    out.extend(scrubs_of_unreleased(world));
    out
}

/// Every scrub asked for or reported must be of a PV that is Released (or gone).
fn scrubs_of_unreleased(world: &World) -> Vec<Violation> {
    let by_uid: BTreeMap<&str, &PersistentVolume> =
        world.local.iter().map(|p| (uid(p), p)).collect();
    let mut out = Vec::new();
    for (node, nv) in &world.reports {
        let asked = nv
            .spec
            .cleanups
            .iter()
            .map(|c| (c.pv_uid.as_str(), "asked"));
        let status = nv.status.clone().unwrap_or_default();
        let done: Vec<(String, String)> = status
            .cleanups
            .iter()
            .map(|c| (c.pv_uid.clone(), format!("{:?}", c.result)))
            .collect();
        let done = done.iter().map(|(u, r)| (u.as_str(), r.as_str()));
        for (pv_uid, what) in asked.chain(done) {
            let Some(pv) = by_uid.get(pv_uid) else {
                continue;
            };
            if !matches!(phase(pv), Some("Released" | "Failed")) {
                out.push(violation(
                    ONLY_RELEASED_SCRUBBED,
                    format!("scrub {what} on node {node} for {}", describe(pv)),
                ));
            }
        }
    }
    out
}

/// The invariants that hold once the system has settled: local PVs agree with their disks
/// (or carry the label that says why not, and only then), Available PVs point at Ready
/// volumes, and NFS directories and PVs match.
pub fn settled(world: &World) -> Vec<Violation> {
    let mut out = Vec::new();
    for pv in world
        .local
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        out.extend(local_pv(world, pv));
    }
    let mut wanted = BTreeMap::new();
    for pv in &world.nfs {
        let dir = pv_dir(pv);
        if !world.dirs.contains_key(&dir) && pv.metadata.deletion_timestamp.is_none() {
            let invariant = if phase(pv) == Some("Available") {
                AVAILABLE_IS_READY
            } else {
                DIRS_MATCH_PVS
            };
            out.push(violation(
                invariant,
                format!("no directory {dir} for {}", describe(pv)),
            ));
        }
        wanted.insert(dir, pv);
    }
    // NB: an empty directory without a PV is the documented adoption window (a crash between
    // MKDIR and the PV create; the next PV adopts it); one with anything in it is a leak.
    for (dir, entries) in &world.dirs {
        if !wanted.contains_key(dir) && !entries.is_empty() {
            out.push(violation(
                DIRS_MATCH_PVS,
                format!("directory {dir} has no PV and holds {entries:?}"),
            ));
        }
    }
    out
}

fn local_pv(world: &World, pv: &PersistentVolume) -> Vec<Violation> {
    let node = label(pv, LABEL_NODE).unwrap_or_default();
    let path = pv
        .spec
        .as_ref()
        .and_then(|s| s.local.as_ref())
        .map(|l| l.path.clone())
        .unwrap_or_default();
    let id = annotation(pv, ANNOTATION_VOLUME_ID).unwrap_or_default();
    let there = world
        .disks
        .get(&(node.to_string(), path.clone()))
        .cloned()
        .flatten();
    let node_uid = world.nodes.get(node);
    let same_node = node_uid.map(String::as_str) == annotation(pv, ANNOTATION_NODE_UID);
    let agrees = there.as_deref() == Some(id) && same_node;
    let health = label(pv, LABEL_HEALTH);
    let disk = format!(
        "disk at {path} on {node}: {} (node uid {})",
        there.as_deref().unwrap_or("nothing mounted"),
        node_uid.map(String::as_str).unwrap_or("none: no Node")
    );
    let mut out = Vec::new();
    match (phase(pv), agrees, health) {
        (Some("Available"), false, _) => out.push(violation(
            PV_MATCHES_DISK,
            format!(
                "an Available PV for a volume that is not there: {}; {disk}",
                describe(pv)
            ),
        )),
        (_, false, None) => out.push(violation(
            PV_MATCHES_DISK,
            format!(
                "a PV in use for a volume that is not there, unlabelled: {}; {disk}",
                describe(pv)
            ),
        )),
        (_, true, Some(_)) => out.push(violation(
            PV_MATCHES_DISK,
            format!(
                "a PV labelled unhealthy whose volume is there: {}; {disk}",
                describe(pv)
            ),
        )),
        _ => {}
    }
    if phase(pv) == Some("Available") && agrees {
        let entry = world.reports.get(node).and_then(|nv| {
            let status = nv.status.as_ref()?;
            (Some(&status.node_uid) == node_uid).then_some(())?;
            status.volumes.iter().find(|v| v.path == path).cloned()
        });
        let ready = entry
            .as_ref()
            .is_some_and(|v| v.state == VolumeState::Ready && v.volume_id == id);
        if !ready {
            out.push(violation(
                AVAILABLE_IS_READY,
                format!("{}; the report of {node} says {entry:?}", describe(pv)),
            ));
        }
    }
    out
}
