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

#[test]
fn a_recreated_node_does_not_resurrect_old_pvs() {
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
    // The new node's agent reports the same disks: vol1 gets a fresh PV made for the new node;
    // the Bound vol2 PV stays the old node's, labelled.
    let mut r = (*two_disks().reports[0]).clone();
    r.status.as_mut().expect("status").node_uid = "uid-n1-second".into();
    w.reports = vec![Arc::new(r)];
    converge(&mut w);
    let fresh = pv_named(&w, &pv1()).expect("fresh PV");
    assert_eq!(
        fresh.metadata.annotations.as_ref().expect("a")[ANNOTATION_NODE_UID],
        "uid-n1-second"
    );
    assert_eq!(
        label(pv_named(&w, &vol2).expect("bound"), "volpool.io/health"),
        Some("node-gone")
    );
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
