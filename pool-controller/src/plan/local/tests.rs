//! A pass over the changed nodes only plans what a pass over every node would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeStatus};
use volpool_api::{
    CleanupOutcome, CleanupResult, NodeVolumes, NodeVolumesSpec, NodeVolumesStatus, VolumeMode,
    VolumeReport, VolumeState,
};

use super::LocalParts;
use crate::plan::{ClassInfo, NodeInfo, Plan, Scope, World, WorldPvs, plan, plan_pass};

const GIB: u64 = 1 << 30;

fn report(node: &str, volumes: &[(&str, u64)]) -> Arc<NodeVolumes> {
    let mut nv = NodeVolumes::new(node, NodeVolumesSpec::default());
    nv.status = Some(NodeVolumesStatus {
        node_uid: format!("uid-{node}"),
        volumes: volumes
            .iter()
            .map(|(entry, gib)| VolumeReport {
                pool: "fast".into(),
                volume_id: format!("uuid:{node}-{entry}"),
                path: format!("/mnt/disks/{entry}"),
                volume_mode: VolumeMode::Filesystem,
                fs_type: "ext4".into(),
                device: String::new(),
                capacity_bytes: gib * GIB,
                state: VolumeState::Ready,
                message: String::new(),
            })
            .collect(),
        ..Default::default()
    });
    Arc::new(nv)
}

fn world() -> World {
    let yaml = "metadata: {name: fast, generation: 1}\nspec:\n  storageClassName: fast-disks\n  local: {discoveryDir: /mnt/disks}\n";
    let nodes = ["n1", "n2", "n3"];
    World {
        pools: vec![Arc::new(serde_yaml::from_str(yaml).expect("pool"))],
        reports: nodes
            .iter()
            .map(|n| report(n, &[("a", 10), ("b", 20)]))
            .collect(),
        nodes: nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.to_string(),
                uid: format!("uid-{n}"),
                labels: Some(BTreeMap::new()),
            })
            .collect(),
        pvs: Vec::new(),
        storage_classes: Some(BTreeMap::from([(
            "fast-disks".to_string(),
            ClassInfo {
                provisioner: "kubernetes.io/no-provisioner".into(),
                wait_for_consumer: false,
            },
        )])),
        claims: Vec::new(),
        claims_in_use: BTreeSet::new(),
        served_classes: BTreeSet::new(),
        explained: BTreeMap::new(),
        exports: BTreeMap::new(),
        now: "2026-01-01T12:00:00Z".parse().expect("now"),
    }
}

/// Play the apiserver for the writes of a plan.
fn settle(world: &mut World, plan: &Plan) {
    use crate::plan::Change;
    for change in &plan.changes {
        match change {
            Change::CreatePv { pv } | Change::UpdatePv { pv, .. } => {
                let mut new = pv.to_pv();
                let name = new.metadata.name.clone();
                let old = world.pvs.iter().position(|p| p.metadata.name == name);
                new.metadata.uid = Some(format!("uid-{}", name.unwrap_or_default()));
                if let Some(i) = old {
                    new.status = world.pvs[i].status.clone();
                    let claim = world.pvs[i].spec.as_ref().and_then(|s| s.claim_ref.clone());
                    new.spec.as_mut().expect("spec").claim_ref = claim;
                    world.pvs[i] = Arc::new(new);
                } else {
                    world.pvs.push(Arc::new(new));
                }
            }
            Change::DeletePv { name, .. } => {
                world.pvs.retain(|p| p.metadata.name.as_ref() != Some(name))
            }
            Change::SetCleanups { node, cleanups, .. } => {
                let report = world
                    .reports
                    .iter_mut()
                    .find(|r| r.metadata.name.as_ref() == Some(node));
                Arc::make_mut(report.expect("report")).spec.cleanups = cleanups.clone();
            }
            Change::PoolStatus { status, .. } => {
                Arc::make_mut(&mut world.pools[0]).status = Some(status.clone());
            }
            _ => {}
        }
    }
}

fn converge(world: &mut World) -> LocalParts {
    for _ in 0..6 {
        let plan = plan(world);
        if plan.changes.is_empty() {
            let mut parts = LocalParts::default();
            plan_pass(world, &WorldPvs::new(&world.pvs), &Scope::All, &mut parts);
            return parts;
        }
        settle(world, &plan);
    }
    panic!("no convergence");
}

/// Plan `world` over `changed` nodes only, from the parts of the world before the change, and
/// over every node: the same writes and the same parts.
fn same_as_full(world: &World, before: &LocalParts, changed: &[&str]) -> Plan {
    let pvs = WorldPvs::new(&world.pvs);
    let mut full_parts = LocalParts::default();
    let (full, _) = plan_pass(world, &pvs, &Scope::All, &mut full_parts);
    let mut parts = before.clone();
    let scope = Scope::Nodes(changed.iter().map(|n| n.to_string()).collect());
    let (partial, busy) = plan_pass(world, &pvs, &scope, &mut parts);
    let text = |plan: &Plan| {
        let mut all: Vec<String> = plan.changes.iter().map(|c| format!("{c:?}")).collect();
        all.sort();
        all
    };
    assert!(!full.changes.is_empty(), "the change should need writes");
    assert_eq!(text(&partial), text(&full));
    assert!(parts == full_parts, "the parts differ from a full pass's");
    assert!(busy.iter().all(|n| changed.contains(&n.as_str())));
    full
}

fn pv_on(world: &World, node: &str, entry: &str) -> usize {
    let path = format!("/mnt/disks/{entry}");
    world
        .pvs
        .iter()
        .position(|p| {
            let labels = p.metadata.labels.as_ref().expect("labels");
            let local = p.spec.as_ref().and_then(|s| s.local.as_ref());
            labels.get("volpool.io/node").map(String::as_str) == Some(node)
                && local.is_some_and(|l| l.path == path)
        })
        .expect("pv")
}

#[test]
fn a_pass_over_the_changed_nodes_plans_what_a_full_pass_would() {
    let mut w = world();
    let mut parts = converge(&mut w);
    assert_eq!(w.pvs.len(), 6);

    // A disk of n2 grows, n3 loses one.
    w.reports[1] = report("n2", &[("a", 10), ("b", 30)]);
    w.reports[2] = report("n3", &[("a", 10)]);
    let plan1 = same_as_full(&w, &parts, &["n2", "n3"]);
    settle(&mut w, &plan1);
    parts = converge(&mut w);

    // A PV of n1 is released: a scrub is asked for; then the agent reports it done.
    let i = pv_on(&w, "n1", "a");
    let pv = Arc::make_mut(&mut w.pvs[i]);
    pv.status = Some(PersistentVolumeStatus {
        phase: Some("Released".into()),
        ..Default::default()
    });
    pv.spec.as_mut().expect("spec").claim_ref = Some(ObjectReference {
        name: Some("data".into()),
        namespace: Some("apps".into()),
        ..Default::default()
    });
    let (name, uid) = (pv.metadata.name.clone(), pv.metadata.uid.clone());
    let plan2 = same_as_full(&w, &parts, &["n1"]);
    settle(&mut w, &plan2);
    parts = converge(&mut w);
    assert_eq!(w.reports[0].spec.cleanups.len(), 1);
    let status = Arc::make_mut(&mut w.reports[0])
        .status
        .as_mut()
        .expect("status");
    status.cleanups = vec![CleanupResult {
        volume_id: "uuid:n1-a".into(),
        pv_uid: uid.unwrap_or_default(),
        result: CleanupOutcome::Succeeded,
        message: String::new(),
        started_at: "2026-01-01T12:00:01Z".into(),
        finished_at: "2026-01-01T12:00:02Z".into(),
    }];
    let plan3 = same_as_full(&w, &parts, &["n1"]);
    settle(&mut w, &plan3);
    parts = converge(&mut w);
    let fresh = &w.pvs[pv_on(&w, "n1", "a")];
    assert!(fresh.status.is_none() && fresh.metadata.name == name);

    // Someone edits the node label of a PV of n1: n1 alone writes it back.
    let i = pv_on(&w, "n1", "b");
    let labels = Arc::make_mut(&mut w.pvs[i]).metadata.labels.as_mut();
    labels
        .expect("labels")
        .insert("volpool.io/node".into(), "n3".into());
    let plan4 = same_as_full(&w, &parts, &["n1"]);
    assert!(creates(&plan4).is_empty(), "{plan4:?}");
    settle(&mut w, &plan4);
    parts = converge(&mut w);

    // Node n2 goes.
    w.nodes.retain(|n| n.name != "n2");
    same_as_full(&w, &parts, &["n2"]);
}

/// Node `node` also reports a Ready volume of identity `id` at `/mnt/disks/<entry>`.
fn also_reports(world: &mut World, node: &str, entry: &str, id: &str) {
    let report = world
        .reports
        .iter_mut()
        .find(|r| r.metadata.name.as_deref() == Some(node))
        .expect("report");
    let status = Arc::make_mut(report).status.as_mut().expect("status");
    let mut volume = status.volumes[0].clone();
    volume.volume_id = id.into();
    volume.path = format!("/mnt/disks/{entry}");
    status.volumes.push(volume);
}

fn degraded(plan: &Plan) -> String {
    plan.changes
        .iter()
        .find_map(|c| match c {
            crate::plan::Change::PoolStatus { status, .. } => status
                .conditions
                .iter()
                .find(|c| c.type_ == "Degraded")
                .map(|c| c.message.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn creates(plan: &Plan) -> Vec<String> {
    plan.changes
        .iter()
        .filter_map(|c| match c {
            crate::plan::Change::CreatePv { pv } => Some(pv.name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_volume_another_node_already_offers_gets_no_second_pv_and_the_pool_names_both() {
    let mut w = world();
    let parts = converge(&mut w);
    let pv = w.pvs[pv_on(&w, "n1", "a")].metadata.name.clone();
    // n2's report also claims n1's disk (a report written by hand, or a copied disk).
    also_reports(&mut w, "n2", "stolen", "uuid:n1-a");
    let plan = same_as_full(&w, &parts, &["n2"]);
    assert!(creates(&plan).is_empty(), "{plan:?}");
    let message = degraded(&plan);
    assert!(
        message.contains(
            "NodeVolumes \"n2\" reports volume uuid:n1-a, which node n1 already offers as PV"
        ) && message.contains(pv.as_deref().unwrap_or("?")),
        "{message}"
    );
}

#[test]
fn a_volume_two_nodes_report_before_either_has_a_pv_waits_until_one_does() {
    let mut w = world();
    let mut parts = converge(&mut w);
    also_reports(&mut w, "n1", "shared", "uuid:shared");
    also_reports(&mut w, "n2", "shared", "uuid:shared");
    let pvs = WorldPvs::new(&w.pvs);
    let scope = Scope::Nodes(["n1".to_string(), "n2".to_string()].into());
    let (plan, _) = plan_pass(&w, &pvs, &scope, &mut parts);
    assert!(creates(&plan).is_empty(), "{plan:?}");
    assert!(
        degraded(&plan).contains("nodes n1, n2 all report volume uuid:shared"),
        "{}",
        degraded(&plan)
    );
    // n2 no longer reports it: n1 gets its PV, though only n2's report changed.
    let report = Arc::make_mut(&mut w.reports[1]);
    report.status.as_mut().expect("status").volumes.pop();
    let pvs = WorldPvs::new(&w.pvs);
    let (plan, _) = plan_pass(
        &w,
        &pvs,
        &Scope::Nodes(["n2".to_string()].into()),
        &mut parts,
    );
    let made = creates(&plan);
    assert!(made.len() == 1 && made[0].contains("n1"), "{made:?}");
}
