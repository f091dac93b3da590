//! Bad input and unknown state: conditions, never deletions.

use super::*;

#[test]
fn a_node_without_a_report_yet_keeps_its_pvs() {
    let mut w = two_disks();
    converge(&mut w);
    w.reports.clear();
    assert!(!has_any(&plan(&w), &["delete", "update"]));
}

#[test]
fn a_report_from_an_unknown_node_gives_a_condition_and_no_pv() {
    let mut w = world(
        vec![pool("")],
        vec![report("ghost", vec![vol("/mnt/disks/vol1", "uuid:1", GIB)])],
        &[],
    );
    let plan1 = plan(&w);
    assert_eq!(kinds(&plan1), ["status"]);
    settle(&mut w, &plan1);
    assert_condition(
        &w.pools[0],
        "Degraded",
        ("True", "UnknownNode"),
        "no Node \"ghost\"",
    );
}

#[test]
fn an_invalid_pool_gets_a_condition_and_nothing_else_while_others_proceed() {
    let mut w = pv1_released(pool(""));
    let mut bad = (*pool("  releaseGracePeriod: soon\n")).clone();
    bad.metadata.generation = Some(2);
    let other = Arc::new(serde_yaml::from_str::<VolumePool>("metadata: {name: slow}\nspec:\n  storageClassName: fast-disks\n  local: {discoveryDir: /mnt/slow}\n").expect("pool"));
    w.pools = vec![Arc::new(bad), other];
    let mut r = (*w.reports[0]).clone();
    let mut slow = vol("/mnt/slow/s1", "uuid:s1", GIB);
    slow.pool = "slow".into();
    r.status.as_mut().expect("s").volumes.push(slow);
    r.status.as_mut().expect("s").volumes.clear();
    r.status.as_mut().expect("s").volumes.push({
        let mut v = vol("/mnt/slow/s1", "uuid:s1", GIB);
        v.pool = "slow".into();
        v
    });
    w.reports = vec![Arc::new(r)];
    let plan1 = plan(&w);
    assert_eq!(
        kinds(&plan1),
        ["create", "status", "status"],
        "{:#?}",
        plan1.changes
    );
    settle(&mut w, &plan1);
    let status = w.pools[0].status.as_ref().expect("s");
    assert_condition(
        &w.pools[0],
        "Ready",
        ("False", "InvalidSpec"),
        "releaseGracePeriod",
    );
    assert_eq!(status.observed_generation, 2);
    assert_eq!(w.pvs.len(), 3, "nothing deleted because of bad input");
}

#[test]
fn overlapping_discovery_dirs_refuse_both_pools() {
    let inner = Arc::new(serde_yaml::from_str::<VolumePool>("metadata: {name: inner}\nspec:\n  storageClassName: fast-disks\n  local: {discoveryDir: /mnt/disks/ssd}\n").expect("pool"));
    let mut w = world(vec![pool(""), inner], two_disks().reports, &["n1"]);
    let plan1 = plan(&w);
    assert_eq!(kinds(&plan1), ["status", "status"]);
    settle(&mut w, &plan1);
    for p in &w.pools {
        let ready = condition(p, "Ready");
        assert_eq!(ready.reason, "OverlappingDiscoveryDir");
    }
}

#[test]
fn a_missing_storage_class_is_a_degraded_condition_not_a_blocker() {
    let mut w = two_disks();
    w.storage_classes = Some(BTreeMap::new());
    converge(&mut w);
    assert_eq!(w.pvs.len(), 2);
    let degraded = condition(&w.pools[0], "Degraded");
    assert_eq!(degraded.reason, "StorageClassNotFound");
}

#[test]
fn pool_settings_and_selectors_follow_the_pool() {
    let mut w = two_disks();
    converge(&mut w);
    w.pools = vec![pool(
        "  reclaimPolicy: Retain\n  mountOptions: [noatime]\n  labels: {team: search}\n",
    )];
    converge(&mut w);
    let spec = pv_named(&w, &pv1())
        .and_then(|p| p.spec.clone())
        .expect("spec");
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
    assert_eq!(spec.mount_options, Some(vec!["noatime".to_string()]));
    assert_eq!(
        label(pv_named(&w, &pv1()).expect("pv"), "team"),
        Some("search")
    );
    // A selector that no longer matches the node: its Available PVs go.
    w.pools = vec![pool("  nodeSelector: {matchLabels: {disk: ssd}}\n")];
    converge(&mut w);
    assert!(w.pvs.is_empty());
}

#[test]
fn scrub_requests_of_other_pools_are_kept() {
    let mut w = two_disks();
    converge(&mut w);
    let foreign = CleanupRequest {
        volume_id: "uuid:x".into(),
        persistent_volume: "other-pv".into(),
        pv_uid: "u".into(),
        claim_uid: String::new(),
        method: CleanupMethod::Wipe,
    };
    let mut other_pv = (*w.pvs[0]).clone();
    other_pv.metadata.name = Some("other-pv".into());
    other_pv
        .metadata
        .labels
        .as_mut()
        .expect("l")
        .insert("volpool.io/pool".into(), "deleted-pool".into());
    w.pvs.push(Arc::new(other_pv));
    Arc::make_mut(&mut w.reports[0]).spec.cleanups = vec![foreign];
    assert!(!has_any(&plan(&w), &["cleanups"]));
}

#[test]
fn requests_whose_pv_is_gone_are_dropped_only_by_the_controller_of_their_pool() {
    // A controller started with --pool-selector sees one pool, `fast`, on node n1 only.
    let mut on_n1 = vol("/mnt/disks/s1", "uuid:s1", GIB);
    on_n1.pool = "slow".into();
    let mut w = world(
        vec![pool(
            "  nodeSelector: {matchLabels: {kubernetes.io/hostname: n1}}\n",
        )],
        vec![
            report("n1", vec![vol("/mnt/disks/vol1", "uuid:1", GIB), on_n1]),
            report("n2", vec![]),
        ],
        &["n1", "n2"],
    );
    converge(&mut w);
    let request = |id: &str, pv: &str| CleanupRequest {
        volume_id: id.into(),
        persistent_volume: pv.into(),
        pv_uid: format!("uid-{pv}"),
        claim_uid: String::new(),
        method: CleanupMethod::Wipe,
    };
    // Requests another controller made, whose PVs it has just deleted after their scrub.
    let slow_n1 = request("uuid:s1", "slow-n1-s1");
    let gone_fast = request("uuid:1", "fast-n1-old");
    Arc::make_mut(&mut w.reports[0]).spec.cleanups = vec![slow_n1.clone(), gone_fast];
    Arc::make_mut(&mut w.reports[1]).spec.cleanups = vec![request("uuid:9", "slow-n2-x")];
    let plan1 = plan(&w);
    let cleanups: Vec<_> = plan1
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::SetCleanups { node, cleanups, .. } => Some((node.as_str(), cleanups)),
            _ => None,
        })
        .collect();
    assert_eq!(
        cleanups,
        [("n1", &vec![slow_n1])],
        "n1 keeps the other pool's request and loses its own pool's; n2, outside the pool, is left alone"
    );
}
