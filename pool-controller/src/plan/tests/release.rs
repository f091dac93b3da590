//! Release, grace period and scrub rules.

use super::*;

#[test]
fn released_with_delete_is_scrubbed_by_the_agent_then_recreated() {
    let mut w = pv1_released(pool(""));
    let uid = format!("uid-{}", pv1());
    let plan1 = plan(&w);
    assert!(events(&plan1).contains(&("Released", Some("PersistentVolumeClaim"))));
    settle(&mut w, &plan1);
    assert_eq!(
        w.reports[0].spec.cleanups,
        vec![CleanupRequest {
            volume_id: "uuid:1".into(),
            persistent_volume: pv1(),
            pv_uid: uid.clone(),
            claim_uid: "claim-uid".into(),
            method: CleanupMethod::Wipe,
        }]
    );
    converge(&mut w);
    assert_eq!(w.pools[0].status.as_ref().expect("s").volumes.cleaning, 1);
    assert!(
        pv_named(&w, &pv1()).is_some(),
        "nothing deleted before the agent reports"
    );
    // The agent reports success.
    report_scrub(
        &mut w,
        CleanupOutcome::Succeeded,
        "",
        "2026-01-01T12:00:30Z",
    );
    let plan2 = plan(&w);
    let deleted = plan2.changes.iter().find_map(|c| match c {
        Change::DeletePv {
            name,
            uid,
            scrub_seconds,
            ..
        } => Some((name.clone(), uid.clone(), *scrub_seconds)),
        _ => None,
    });
    assert_eq!(deleted, Some((pv1(), uid.clone(), Some(30.0))));
    assert!(
        plan2
            .changes
            .iter()
            .any(|c| matches!(c, Change::SetCleanups { cleanups, .. } if cleanups.is_empty()))
    );
    settle(&mut w, &plan2);
    converge(&mut w);
    let fresh = pv_named(&w, &pv1()).expect("a fresh PV");
    assert_ne!(
        fresh.metadata.uid.as_deref(),
        Some(uid.as_str()).filter(|_| false)
    );
    assert!(
        fresh
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_none()
    );
    assert!(
        fresh
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| !a.contains_key(ANNOTATION_RELEASED_AT))
    );
}

#[test]
fn the_release_grace_period_is_an_undo_window() {
    let mut w = pv1_released(pool("  releaseGracePeriod: 10m\n"));
    let plan1 = plan(&w);
    assert_eq!(plan1.wake_after, Some(Duration::from_secs(600)));
    settle(&mut w, &plan1);
    converge(&mut w);
    assert!(
        w.reports[0].spec.cleanups.is_empty(),
        "no scrub inside the window"
    );
    w.now = "2026-01-01T12:09:00Z".parse().expect("t");
    assert_eq!(plan(&w).wake_after, Some(Duration::from_secs(60)));
    w.now = "2026-01-01T12:10:01Z".parse().expect("t");
    converge(&mut w);
    assert_eq!(w.reports[0].spec.cleanups.len(), 1);
}

/// Play the agent of n1: report how the scrub of `pv1` went.
fn report_scrub(w: &mut World, result: CleanupOutcome, message: &str, finished_at: &str) {
    let status = Arc::make_mut(&mut w.reports[0]).status.as_mut().expect("s");
    status.cleanups = vec![CleanupResult {
        volume_id: "uuid:1".into(),
        pv_uid: format!("uid-{}", pv1()),
        result,
        message: message.into(),
        finished_at: finished_at.into(),
        started_at: "2026-01-01T12:00:01Z".into(),
    }];
}

#[test]
fn a_failed_scrub_keeps_the_pv_and_warns_once() {
    let mut w = pv1_released(pool(""));
    converge(&mut w);
    report_scrub(&mut w, CleanupOutcome::Refused, "identity mismatch", "");
    let plan1 = plan(&w);
    assert!(events(&plan1).contains(&("CleanupFailed", Some("PersistentVolume"))));
    assert!(!has_any(&plan1, &["delete"]));
    settle(&mut w, &plan1);
    converge(&mut w);
    assert!(pv_named(&w, &pv1()).is_some());
    let status = w.pools[0].status.as_ref().expect("s");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.reason == "CleanupFailed")
    );
}

#[test]
fn a_running_scrub_is_waited_for_not_failed() {
    let mut w = pv1_released(pool(""));
    converge(&mut w);
    report_scrub(&mut w, CleanupOutcome::Running, "", "");
    assert!(plan(&w).changes.is_empty(), "{:#?}", plan(&w).changes);
    assert_eq!(w.pools[0].status.as_ref().expect("s").volumes.cleaning, 1);
}

#[test]
fn retain_leaves_released_pvs_alone_and_counts_them() {
    let mut w = pv1_released(pool("  reclaimPolicy: Retain\n"));
    converge(&mut w);
    assert!(w.reports[0].spec.cleanups.is_empty());
    assert!(pv_named(&w, &pv1()).is_some());
    assert_eq!(w.pools[0].status.as_ref().expect("s").volumes.released, 1);
}

#[test]
fn cleanup_none_recycles_without_a_scrub() {
    let mut none = (*pool("")).clone();
    none.spec.local.as_mut().expect("local").cleanup = Some(CleanupMethod::None);
    let w = pv1_released(Arc::new(none));
    let plan1 = plan(&w);
    assert!(
        plan1
            .changes
            .iter()
            .any(|c| matches!(c, Change::DeletePv { name, .. } if *name == pv1()))
    );
    assert!(!has_any(&plan1, &["cleanups"]));
}
