//! Nodes deleted or re-created under their PVs.

use super::*;

#[test]
fn a_deleted_node_takes_its_available_pvs_and_marks_bound_ones() {
    let (mut w, vol2) = vol2_bound();
    w.nodes.clear();
    w.reports.clear();
    let plan1 = plan(&w);
    assert!(events(&plan1).contains(&("NodeGone", Some("PersistentVolume"))));
    settle(&mut w, &plan1);
    assert!(pv_named(&w, &pv1()).is_none());
    assert_eq!(
        label(
            pv_named(&w, &vol2).expect("bound PV kept"),
            "volpool.io/health"
        ),
        Some("node-gone")
    );
}

/// n1 re-created under a new UID, its agent reporting `vol2` (vol1 as before).
fn recreated_n1_reports(w: &mut World, vol2: (&str, u64)) {
    w.nodes = vec![NodeInfo {
        uid: "uid-n1-second".into(),
        ..node("n1")
    }];
    let mut r = (*n1_disks(("uuid:1", 10 * GIB), vol2)[0]).clone();
    r.status.as_mut().expect("status").node_uid = "uid-n1-second".into();
    w.reports = vec![Arc::new(r)];
}

fn node_uid(pv: &PersistentVolume) -> &str {
    &pv.metadata.annotations.as_ref().expect("annotations")[ANNOTATION_NODE_UID]
}

#[test]
fn a_recreated_node_does_not_resurrect_old_pvs_until_its_agent_reports_the_disks() {
    let (mut w, vol2) = vol2_bound();
    w.nodes[0].uid = "uid-n1-second".into();
    // The old report is still around (garbage collection lags): ignored, with a condition.
    let plan1 = plan(&w);
    assert!(!has_any(&plan1, &["create"]));
    settle(&mut w, &plan1);
    assert!(
        pv_named(&w, &pv1()).is_none(),
        "the old node's Available PV is deleted"
    );
    assert_eq!(
        label(pv_named(&w, &vol2).expect("bound"), "volpool.io/health"),
        Some("node-gone")
    );
    let status = w.pools[0].status.as_ref().expect("status");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.message.contains("earlier Node"))
    );
    // The new node's agent reports the same disks: vol1 gets a fresh PV made for the new node,
    // and the Bound vol2 PV is that disk's again: the mark goes, the new UID is written.
    recreated_n1_reports(&mut w, ("uuid:2", 20 * GIB));
    let plan2 = plan(&w);
    assert!(events(&plan2).contains(&("NodeReturned", Some("PersistentVolume"))));
    settle(&mut w, &plan2);
    converge(&mut w);
    let fresh = pv_named(&w, &pv1()).expect("fresh PV");
    assert_eq!(node_uid(fresh), "uid-n1-second");
    let bound = pv_named(&w, &vol2).expect("bound");
    assert_eq!(label(bound, "volpool.io/health"), None);
    assert_eq!(node_uid(bound), "uid-n1-second");
    assert_eq!(w.pools[0].status.as_ref().expect("s").volumes.unhealthy, 0);
}

#[test]
fn a_deleted_node_that_comes_back_with_its_disks_takes_its_pvs_back() {
    let (mut w, vol2) = vol2_bound();
    w.nodes.clear();
    w.reports.clear();
    converge(&mut w);
    assert_eq!(
        label(pv_named(&w, &vol2).expect("kept"), "volpool.io/health"),
        Some("node-gone")
    );
    recreated_n1_reports(&mut w, ("uuid:2", 20 * GIB));
    converge(&mut w);
    let bound = pv_named(&w, &vol2).expect("bound");
    assert_eq!(label(bound, "volpool.io/health"), None);
    assert_eq!(node_uid(bound), "uid-n1-second");
    assert_eq!(w.pvs.len(), 2);
}

#[test]
fn another_disk_at_the_path_on_a_recreated_node_is_not_the_old_pvs() {
    let (mut w, vol2) = vol2_bound();
    recreated_n1_reports(&mut w, ("uuid:2-new", 20 * GIB));
    converge(&mut w);
    let old = pv_named(&w, &vol2).expect("the old PV is kept");
    assert_eq!(label(old, "volpool.io/health"), Some("node-gone"));
    assert_eq!(node_uid(old), "uid-n1", "never re-pointed at the new node");
    assert!(pv_named(&w, &local_pv_name_of("n1", "vol2", "uuid:2-new")).is_some());
}

#[test]
fn a_local_pv_offers_whole_mib_of_its_disk() {
    let mut w = world(
        vec![pool("")],
        vec![report(
            "n1",
            vec![vol("/mnt/disks/vol1", "uuid:1", 1945 * (1 << 20) + 4095)],
        )],
        &["n1"],
    );
    converge(&mut w);
    let pv = pv_named(&w, &pv1()).expect("a PV");
    let capacity = &pv
        .spec
        .as_ref()
        .expect("spec")
        .capacity
        .as_ref()
        .expect("c")["storage"];
    assert_eq!(
        capacity.0,
        (1945u64 << 20).to_string(),
        "1945Mi, not the odd bytes"
    );
    assert!(
        !w.reports[0].status.as_ref().expect("s").volumes[0]
            .capacity_bytes
            .is_multiple_of(1 << 20),
        "the report keeps the exact bytes"
    );
}

#[test]
fn a_node_recreated_between_two_passes_keeps_the_pvs_of_the_disks_it_reports() {
    let (mut w, vol2) = vol2_bound();
    recreated_n1_reports(&mut w, ("uuid:2", 20 * GIB));
    let plan1 = plan(&w);
    assert!(!has_any(&plan1, &["create", "delete"]), "{plan1:?}");
    settle(&mut w, &plan1);
    for name in [pv1(), vol2] {
        let pv = pv_named(&w, &name).expect("kept");
        assert_eq!(node_uid(pv), "uid-n1-second");
        assert_eq!(pv.metadata.uid, Some(format!("uid-{name}")), "the same PV");
    }
}

#[test]
fn a_released_pv_of_a_recreated_node_is_scrubbed_only_once_its_disk_is_reported_again() {
    let mut w = pv1_released(pool(""));
    w.nodes[0].uid = "uid-n1-second".into();
    converge(&mut w);
    assert!(
        w.reports[0].spec.cleanups.is_empty(),
        "no scrub on a gone node"
    );
    assert_eq!(
        label(pv_named(&w, &pv1()).expect("kept"), "volpool.io/health"),
        Some("node-gone")
    );
    recreated_n1_reports(&mut w, ("uuid:2", 20 * GIB));
    converge(&mut w);
    let requests = &w.reports[0].spec.cleanups;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (
            requests[0].persistent_volume.as_str(),
            requests[0].volume_id.as_str()
        ),
        (pv1().as_str(), "uuid:1")
    );
    assert_eq!(
        node_uid(pv_named(&w, &pv1()).expect("kept")),
        "uid-n1-second"
    );
}
