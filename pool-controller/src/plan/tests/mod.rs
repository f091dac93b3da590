//! Every lifecycle rule of a local pool, on plain data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, ObjectReference, PersistentVolumeSpec, PersistentVolumeStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use volpool_api::{
    CleanupMethod, CleanupOutcome, CleanupResult, NodeVolumesSpec, NodeVolumesStatus, VolumeMode,
    VolumeReport, VolumeState,
};
use volpool_api::{CleanupRequest, NodeVolumes, VolumePool};

const GIB: u64 = 1 << 30;

fn now() -> Timestamp {
    "2026-01-01T12:00:00Z".parse().expect("time")
}

fn pool(extra: &str) -> Arc<VolumePool> {
    let yaml = format!(
        "metadata: {{name: fast, generation: 1}}\nspec:\n  storageClassName: fast-disks\n  local: {{discoveryDir: /mnt/disks}}\n{extra}"
    );
    Arc::new(serde_yaml::from_str(&yaml).expect("pool"))
}

fn vol(path: &str, id: &str, bytes: u64) -> VolumeReport {
    VolumeReport {
        pool: "fast".into(),
        volume_id: id.into(),
        path: path.into(),
        volume_mode: VolumeMode::Filesystem,
        fs_type: "ext4".into(),
        device: String::new(),
        capacity_bytes: bytes,
        state: VolumeState::Ready,
        message: String::new(),
    }
}

fn report(node: &str, volumes: Vec<VolumeReport>) -> Arc<NodeVolumes> {
    let mut nv = NodeVolumes::new(node, NodeVolumesSpec::default());
    nv.status = Some(NodeVolumesStatus {
        node_uid: format!("uid-{node}"),
        volumes,
        ..Default::default()
    });
    Arc::new(nv)
}

fn node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: Some(BTreeMap::from([(
            "kubernetes.io/hostname".to_string(),
            name.to_string(),
        )])),
    }
}

fn world(pools: Vec<Arc<VolumePool>>, reports: Vec<Arc<NodeVolumes>>, nodes: &[&str]) -> World {
    World {
        pools,
        reports,
        nodes: nodes.iter().map(|n| node(n)).collect(),
        pvs: vec![],
        storage_classes: Some(BTreeMap::from([("fast-disks".to_string(), class(false))])),
        claims: Vec::new(),
        claims_in_use: BTreeSet::new(),
        served_classes: BTreeSet::from(["fast-disks".to_string()]),
        explained: BTreeMap::new(),
        exports: BTreeMap::new(),
        now: now(),
    }
}

/// A `kubernetes.io/no-provisioner` class; `wait` for WaitForFirstConsumer binding.
fn class(wait: bool) -> ClassInfo {
    ClassInfo {
        provisioner: crate::plan::claims::NO_PROVISIONER.into(),
        wait_for_consumer: wait,
    }
}

/// Play the apiserver: apply every change to the world, as the watch would show it.
fn settle(world: &mut World, plan: &Plan) {
    apply_changes(world, &plan.changes);
}

fn apply_changes(world: &mut World, changes: &[Change]) {
    for change in changes {
        match change {
            Change::CreatePv { pv } | Change::UpdatePv { pv, .. } => upsert(world, pv.to_pv()),
            Change::ApplyNfsPv { pv, .. } => upsert(world, pv.to_pv()),
            Change::DeletePv { name, .. } => {
                world.pvs.retain(|p| p.metadata.name.as_ref() != Some(name))
            }
            Change::SetCleanups { node, cleanups, .. } => {
                for r in &mut world.reports {
                    if r.metadata.name.as_ref() == Some(node) {
                        Arc::make_mut(r).spec.cleanups = cleanups.clone();
                    }
                }
            }
            Change::PoolStatus { pool, status } => {
                for p in &mut world.pools {
                    if p.metadata.name.as_ref() == Some(pool) {
                        Arc::make_mut(p).status = Some(status.clone());
                    }
                }
            }
            Change::Event(_) => {}
        }
    }
}

/// A create or an apply: what the apiserver keeps of an existing PV (UID, status, claimRef)
/// stays.
fn upsert(world: &mut World, mut pv: PersistentVolume) {
    let name = pv.metadata.name.clone();
    match world.pvs.iter().position(|p| p.metadata.name == name) {
        Some(i) => {
            let before = &world.pvs[i];
            pv.metadata.uid = before.metadata.uid.clone();
            pv.status = before.status.clone();
            if let (Some(s), Some(b)) = (pv.spec.as_mut(), before.spec.as_ref()) {
                s.claim_ref = b.claim_ref.clone();
            }
            world.pvs[i] = Arc::new(pv);
        }
        None => {
            pv.metadata.uid = Some(format!("uid-{}", name.unwrap_or_default()));
            world.pvs.push(Arc::new(pv));
        }
    }
}

fn converge(world: &mut World) {
    for _ in 0..5 {
        let plan = plan(world);
        if plan.changes.is_empty() {
            return;
        }
        settle(world, &plan);
    }
    panic!("no convergence: {:#?}", plan(world).changes);
}

/// Play the binder: set a PV's phase, and its claimRef (or none).
fn set_phase(world: &mut World, name: &str, phase: &str, claimed: bool) {
    for pv in &mut world.pvs {
        if pv.metadata.name.as_deref() == Some(name) {
            let pv = Arc::make_mut(pv);
            pv.status = Some(PersistentVolumeStatus {
                phase: Some(phase.into()),
                ..Default::default()
            });
            pv.spec.as_mut().expect("spec").claim_ref = claimed.then(|| ObjectReference {
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some("apps".into()),
                name: Some("data-0".into()),
                uid: Some("claim-uid".into()),
                ..Default::default()
            });
        }
    }
}

/// A pool's condition of that type.
fn condition<'a>(pool: &'a VolumePool, type_: &str) -> &'a Condition {
    pool.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

/// Assert that the pool's condition `type_` has this (status, reason) and its message says
/// `says`.
fn assert_condition(pool: &VolumePool, type_: &str, status_reason: (&str, &str), says: &str) {
    let c = condition(pool, type_);
    assert_eq!((c.status.as_str(), c.reason.as_str()), status_reason);
    assert!(c.message.contains(says), "{}", c.message);
}

fn pv_named<'a>(world: &'a World, name: &str) -> Option<&'a PersistentVolume> {
    world
        .pvs
        .iter()
        .map(Arc::as_ref)
        .find(|p| p.metadata.name.as_deref() == Some(name))
}

fn label<'a>(pv: &'a PersistentVolume, key: &str) -> Option<&'a str> {
    pv.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn kinds(plan: &Plan) -> Vec<&'static str> {
    plan.changes
        .iter()
        .map(|c| match c {
            Change::CreatePv { .. } => "create",
            Change::UpdatePv { .. } => "update",
            Change::DeletePv { .. } => "delete",
            Change::SetCleanups { .. } => "cleanups",
            Change::PoolStatus { .. } => "status",
            Change::Event(_) => "event",
            Change::ApplyNfsPv { .. } => "apply-nfs",
        })
        .collect()
}

/// Whether the plan has a change of any of these kinds (as [`kinds`] names them).
fn has_any(plan: &Plan, of: &[&str]) -> bool {
    kinds(plan).iter().any(|k| of.contains(k))
}

fn events(plan: &Plan) -> Vec<(&str, Option<&str>)> {
    plan.changes
        .iter()
        .filter_map(|c| match c {
            Change::Event(n) => Some((n.reason.as_str(), n.regarding.kind.as_deref())),
            _ => None,
        })
        .collect()
}

fn pv1() -> String {
    local_pv_name_of("n1", "vol1", "uuid:1")
}

fn local_pv_name_of(node: &str, entry: &str, id: &str) -> String {
    volpool_api::local_pv_name("fast", node, entry, id)
}

/// n1's report of its two disks, vol1 and vol2: each an identity and a size.
fn n1_disks(vol1: (&str, u64), vol2: (&str, u64)) -> Vec<Arc<NodeVolumes>> {
    vec![report(
        "n1",
        vec![
            vol("/mnt/disks/vol1", vol1.0, vol1.1),
            vol("/mnt/disks/vol2", vol2.0, vol2.1),
        ],
    )]
}

fn two_disks() -> World {
    with_two_disks(pool(""))
}

/// `pool` over n1's two disks (10 and 20 GiB).
fn with_two_disks(pool: Arc<VolumePool>) -> World {
    world(
        vec![pool],
        n1_disks(("uuid:1", 10 * GIB), ("uuid:2", 20 * GIB)),
        &["n1"],
    )
}

/// Two disks converged, then vol2's PV Bound: the world and that PV's name.
fn vol2_bound() -> (World, String) {
    let mut w = two_disks();
    converge(&mut w);
    let vol2 = local_pv_name_of("n1", "vol2", "uuid:2");
    set_phase(&mut w, &vol2, "Bound", true);
    (w, vol2)
}

/// `pool` over two disks converged, then pv1 Released by its claim.
fn pv1_released(pool: Arc<VolumePool>) -> World {
    let mut w = with_two_disks(pool);
    converge(&mut w);
    set_phase(&mut w, &pv1(), "Released", true);
    w
}

/// The first expression of a PV's first required node-selector term.
fn node_requirement(spec: &PersistentVolumeSpec) -> &NodeSelectorRequirement {
    let term = &spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
        .expect("affinity")
        .node_selector_terms[0];
    &term.match_expressions.as_ref().expect("expressions")[0]
}

#[test]
fn ready_volumes_become_pvs_with_names_labels_affinity_and_capacity() {
    let mut w = two_disks();
    let plan = plan(&w);
    assert_eq!(kinds(&plan), ["create", "create", "status"]);
    settle(&mut w, &plan);
    let pv = pv_named(&w, &pv1()).expect("PV for vol1");
    assert!(pv1().starts_with("fast-n1-vol1-"));
    assert_eq!(label(pv, "volpool.io/pool"), Some("fast"));
    assert_eq!(label(pv, "volpool.io/node"), Some("n1"));
    assert_eq!(label(pv, "app.kubernetes.io/managed-by"), Some("volpool"));
    assert_eq!(
        label(pv, "volpool.io/volume-id").map(|v| v.starts_with("sha256-")),
        Some(true)
    );
    let spec = pv.spec.as_ref().expect("spec");
    assert_eq!(
        spec.local.as_ref().map(|l| l.path.as_str()),
        Some("/mnt/disks/vol1")
    );
    assert_eq!(
        spec.capacity.as_ref().expect("capacity")["storage"].0,
        (10 * GIB).to_string()
    );
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast-disks"));
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(
        spec.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_string()][..])
    );
    let req = node_requirement(spec);
    assert_eq!(
        (req.key.as_str(), req.operator.as_str()),
        ("kubernetes.io/hostname", "In")
    );
    assert_eq!(req.values.as_deref(), Some(&["n1".to_string()][..]));
    let annotations = pv.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(annotations["pv.kubernetes.io/provisioned-by"], "volpool.io");
    assert_eq!(annotations["volpool.io/path"], "/mnt/disks/vol1");
}

#[test]
fn the_idle_pass_makes_no_write() {
    let mut w = two_disks();
    converge(&mut w);
    let status = w.pools[0].status.as_ref().expect("status");
    assert_eq!(
        (
            status.volumes.available,
            status.nodes,
            status.capacity_bytes.available
        ),
        (2, 1, 30 * GIB)
    );
    set_phase(&mut w, &pv1(), "Available", false);
    assert_eq!(plan(&w), Plan::default());
    // Also when the apiserver writes quantities in canonical form.
    for pv in &mut w.pvs {
        let pv = Arc::make_mut(pv);
        let cap = pv
            .spec
            .as_mut()
            .and_then(|s| s.capacity.as_mut())
            .expect("capacity");
        let bytes: u64 = cap["storage"].0.parse().expect("bytes");
        cap.insert(
            "storage".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(format!("{}Gi", bytes / GIB)),
        );
    }
    assert_eq!(plan(&w), Plan::default());
}

#[test]
fn capacity_drift_updates_available_pvs_only() {
    let (mut w, _) = vol2_bound();
    w.reports = n1_disks(("uuid:1", 12 * GIB), ("uuid:2", 25 * GIB));
    let plan = plan(&w);
    let updated: Vec<&str> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::UpdatePv { pv, .. } => Some(pv.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(updated, [pv1().as_str()]);
    assert!(events(&plan).contains(&("CapacityUpdated", Some("PersistentVolume"))));
    settle(&mut w, &plan);
    let cap = &pv_named(&w, &pv1())
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.capacity.as_ref())
        .expect("cap")["storage"];
    assert_eq!(cap.0, (12 * GIB).to_string());
}

#[test]
fn a_missing_volume_deletes_the_available_pv_and_labels_the_bound_one() {
    let (mut w, vol2) = vol2_bound();
    w.reports = vec![report("n1", vec![])];
    let plan1 = plan(&w);
    assert!(plan1.changes.contains(&Change::DeletePv {
        name: pv1(),
        uid: format!("uid-{}", pv1()),
        pool: "fast".into(),
        reason: "volume uuid:1 is gone from n1:/mnt/disks/vol1; the PV was Available".into(),
        scrub_seconds: None,
    }));
    assert!(
        !plan1
            .changes
            .iter()
            .any(|c| matches!(c, Change::DeletePv { name, .. } if *name == vol2))
    );
    assert!(events(&plan1).contains(&("VolumeMissing", Some("PersistentVolumeClaim"))));
    settle(&mut w, &plan1);
    assert_eq!(
        label(
            pv_named(&w, &vol2).expect("bound PV kept"),
            "volpool.io/health"
        ),
        Some("missing")
    );
    converge(&mut w);
    let status = w.pools[0].status.as_ref().expect("status");
    assert_eq!(status.volumes.unhealthy, 1);
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "UnhealthyVolumes")
    );
    // The disk comes back: the label goes.
    w.reports = vec![report(
        "n1",
        vec![vol("/mnt/disks/vol2", "uuid:2", 20 * GIB)],
    )];
    converge(&mut w);
    assert_eq!(
        label(pv_named(&w, &vol2).expect("PV"), "volpool.io/health"),
        None
    );
}

#[test]
fn unready_entries_are_not_offered() {
    let mut w = two_disks();
    let mut r = (*w.reports[0]).clone();
    let vols = &mut r.status.as_mut().expect("status").volumes;
    vols[1].state = VolumeState::NotMountPoint;
    w.reports = vec![Arc::new(r)];
    assert_eq!(kinds(&plan(&w)), ["create", "status"]);
}

#[test]
fn another_disk_at_the_same_path_is_a_new_pv_and_the_old_one_is_never_scrubbed() {
    let mut w = two_disks();
    converge(&mut w);
    set_phase(&mut w, &pv1(), "Bound", true);
    w.reports = n1_disks(("uuid:NEW", 10 * GIB), ("uuid:2", 20 * GIB));
    let plan1 = plan(&w);
    let created: Vec<String> = plan1
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::CreatePv { pv } => Some(pv.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(created, [local_pv_name_of("n1", "vol1", "uuid:NEW")]);
    settle(&mut w, &plan1);
    assert_eq!(
        label(pv_named(&w, &pv1()).expect("old PV"), "volpool.io/health"),
        Some("replaced")
    );
    // The claim goes: still no scrub request for the old PV, and no deletion.
    set_phase(&mut w, &pv1(), "Released", true);
    converge(&mut w);
    assert!(w.reports[0].spec.cleanups.is_empty());
    assert!(pv_named(&w, &pv1()).is_some());
}

mod bad_input;
mod claims;
mod identity;
mod nfs;
mod nodes;
mod release;
