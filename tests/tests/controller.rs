//! The controller against the real 1.20.2 control plane (PV binder, StatefulSet controller,
//! scheduler, garbage collector): NodeVolumes published as an agent would, PVs checked as a
//! user would see them.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use volpool_api::{NodeVolumes, VolumePool, local_pv_name};
use volpool_e2e::controller::{
    Controller, LEASE_NAMESPACE, LONG, bind, capacity, claim_ref, create_class, create_namespace,
    create_pool, events_about, label, phase, publish_report, pvs_of, spread_statefulset, volume,
    wait_for_event, wait_for_pv, wait_for_pvs,
};
use volpool_e2e::pool::{condition_of, wait_for_pool_condition};
use volpool_e2e::{apply_crds, client, create_node, unique, wait_for};

const GIB: u64 = 1 << 30;

async fn setup(prefix: &str) -> anyhow::Result<(Client, String)> {
    let client = client().await?;
    apply_crds(&client).await?;
    Ok((client, unique(prefix)))
}

/// [`setup`], then the StorageClass, namespace and local pool named after the test (the pool
/// with `extra` spec fields), and its controller.
async fn setup_pool(
    prefix: &str,
    wait_for_consumer: bool,
    extra: serde_json::Value,
) -> anyhow::Result<(Client, String, Controller)> {
    let (client, test) = setup(prefix).await?;
    create_namespace(&client, &test).await?;
    create_class(&client, &test, wait_for_consumer).await?;
    create_pool(&client, &test, &test, &test, extra).await?;
    let controller = Controller::start(&test, &format!("{test}-a")).await?;
    Ok((client, test, controller))
}

/// [`setup_pool`] with Immediate binding and no extra fields, and one Node, `<test>-n`.
async fn setup_pool_and_node(prefix: &str) -> anyhow::Result<(Client, String, Controller, String)> {
    let (client, test, controller) = setup_pool(prefix, false, json!({})).await?;
    let node = format!("{test}-n");
    create_node(&client, &node).await?;
    Ok((client, test, controller, node))
}

#[tokio::test]
async fn disks_of_three_nodes_become_pvs_and_the_idle_pass_writes_nothing() -> anyhow::Result<()> {
    let (client, test, controller) =
        setup_pool("ctl-three", true, json!({"mountOptions": ["noatime"]})).await?;
    let pool = test.clone();
    let mut expected = Vec::new();
    for i in 0..3 {
        let node = format!("{test}-n{i}");
        create_node(&client, &node).await?;
        let vols = (0..2)
            .map(|v| {
                volume(
                    &pool,
                    &format!("vol{v}"),
                    &format!("uuid:{node}-{v}"),
                    (10 + v) * GIB,
                )
            })
            .collect();
        publish_report(&client, &node, vols, vec![]).await?;
        for v in 0..2u64 {
            expected.push((node.clone(), format!("vol{v}"), (10 + v) * GIB));
        }
    }
    let names: Vec<String> = expected
        .iter()
        .map(|(n, e, _)| local_pv_name(&pool, n, e, &format!("uuid:{n}-{}", &e[3..])))
        .collect();
    let pvs = wait_for_pvs(&client, &pool, &names).await?;
    for ((node, entry, bytes), name) in expected.iter().zip(&names) {
        let pv = pvs
            .iter()
            .find(|p| p.metadata.name.as_ref() == Some(name))
            .expect("listed");
        let spec = pv.spec.as_ref().expect("spec");
        assert_eq!(
            spec.local.as_ref().map(|l| l.path.clone()),
            Some(format!("/mnt/disks/{entry}"))
        );
        assert_eq!(capacity(pv), *bytes);
        assert_eq!(spec.storage_class_name.as_deref(), Some(test.as_str()));
        assert_eq!(
            spec.mount_options.as_deref(),
            Some(&["noatime".to_string()][..])
        );
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        let req = &spec
            .node_affinity
            .as_ref()
            .and_then(|a| a.required.as_ref())
            .expect("affinity")
            .node_selector_terms[0]
            .match_expressions
            .as_ref()
            .expect("expressions")[0];
        assert_eq!(
            (req.key.as_str(), req.values.clone()),
            ("kubernetes.io/hostname", Some(vec![node.clone()]))
        );
        assert_eq!(label(pv, "volpool.io/node"), Some(node.as_str()));
        assert_eq!(label(pv, "app.kubernetes.io/managed-by"), Some("volpool"));
        assert_eq!(
            pv.metadata.annotations.as_ref().expect("annotations")["pv.kubernetes.io/provisioned-by"],
            "volpool.io"
        );
    }
    // Status, metrics and health, as a user reads them.
    let pools: Api<VolumePool> = Api::all(client.clone());
    let status = wait_for("pool status with 6 available", LONG, || async {
        let status = pools.get(&pool).await?.status;
        Ok(status.filter(|s| s.volumes.available == 6 && s.nodes == 3))
    })
    .await?;
    assert_eq!(status.capacity_bytes.available, 63 * GIB);
    assert!(condition_of(&status, "Ready").is_some_and(|c| c.status == "True"));
    assert!(condition_of(&status, "Degraded").is_some_and(|c| c.status == "False"));
    assert_eq!(controller.get("/healthz").await?.0, 200);
    assert_eq!(controller.get("/readyz").await?.0, 200);
    let pool_label = format!("pool=\"{pool}\"");
    wait_for("pool gauge", LONG, || async {
        Ok((controller
            .metric(
                "volpool_pool_volumes",
                &[&pool_label, "phase=\"available\""],
            )
            .await?
            == 6.0)
            .then_some(()))
    })
    .await?;
    assert_eq!(
        controller.metric("volpool_controller_leader", &[]).await?,
        1.0
    );

    // Idle: passes keep running (resync 1s) and write nothing.
    assert_eq!(
        controller.writes_during_passes(3.0).await?,
        0.0,
        "an idle pass wrote"
    );
    Ok(())
}

#[tokio::test]
async fn capacity_drift_missing_and_replaced_volumes() -> anyhow::Result<()> {
    let (client, test, _controller, node) = setup_pool_and_node("ctl-drift").await?;
    let (pool, ns) = (test.clone(), test.clone());
    // NB: volume ids of this run only: a PV left by an earlier run on the same cluster holds its id.
    let id = |v: &str| format!("uuid:{test}-{v}");
    let vols = |a: u64| {
        vec![
            volume(&pool, "vol1", &id("1"), a * GIB),
            volume(&pool, "vol2", &id("2"), 5 * GIB),
            volume(&pool, "vol3", &id("3"), 5 * GIB),
        ]
    };
    publish_report(&client, &node, vols(10), vec![]).await?;
    let name = |entry: &str, id: &str| local_pv_name(&pool, &node, entry, id);
    let (pv1, pv2, pv3) = (
        name("vol1", &id("1")),
        name("vol2", &id("2")),
        name("vol3", &id("3")),
    );
    wait_for_pvs(&client, &pool, &[pv1.clone(), pv2.clone(), pv3.clone()]).await?;
    bind(&client, &ns, "data-2", &pv2, &test).await?;
    bind(&client, &ns, "data-3", &pv3, &test).await?;

    // The disk behind vol1 grew: the Available PV follows.
    publish_report(&client, &node, vols(12), vec![]).await?;
    wait_for_pv(&client, &pv1, "capacity 12Gi", |p| capacity(p) == 12 * GIB).await?;

    // vol1 and vol2 unmounted; another disk now at vol3's path.
    publish_report(
        &client,
        &node,
        vec![volume(&pool, "vol3", &id("3b"), 7 * GIB)],
        vec![],
    )
    .await?;
    let new3 = name("vol3", &id("3b"));
    wait_for_pvs(&client, &pool, &[pv2.clone(), pv3.clone(), new3.clone()]).await?;
    let missing = wait_for_pv(&client, &pv2, "labelled missing", |p| {
        label(p, "volpool.io/health") == Some("missing")
    })
    .await?;
    assert_eq!(
        phase(&missing),
        Some("Bound"),
        "a Bound PV is never deleted"
    );
    let note = wait_for_event(&client, "kube-system", &pv2, "VolumeMissing").await?;
    assert!(note.contains("in use"), "{note}");
    wait_for_event(&client, &ns, "data-2", "VolumeMissing").await?;
    wait_for_pv(&client, &pv3, "labelled replaced", |p| {
        label(p, "volpool.io/health") == Some("replaced")
    })
    .await?;
    let fresh = wait_for_pv(&client, &new3, "Available", |p| {
        phase(p) == Some("Available")
    })
    .await?;
    assert_eq!(capacity(&fresh), 7 * GIB);
    let status = wait_for("pool counts unhealthy PVs", LONG, || async {
        let s = Api::<VolumePool>::all(client.clone())
            .get(&pool)
            .await?
            .status;
        Ok(s.filter(|s| s.volumes.unhealthy == 2))
    })
    .await?;
    assert!(condition_of(&status, "Degraded").is_some_and(|c| c.reason == "UnhealthyVolumes"));
    // The replaced PV's claim goes: no scrub is asked for the old identity.
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .delete("data-3", &DeleteParams::default())
        .await?;
    wait_for_pv(&client, &pv3, "Released", |p| phase(p) == Some("Released")).await?;
    let reports: Api<NodeVolumes> = Api::all(client.clone());
    wait_for("a pass after the release", LONG, || async {
        let s = Api::<VolumePool>::all(client.clone())
            .get(&pool)
            .await?
            .status;
        Ok(s.filter(|s| s.volumes.bound == 0 && s.volumes.unhealthy == 2))
    })
    .await?;
    assert!(
        reports.get(&node).await?.spec.cleanups.is_empty(),
        "no scrub of a replaced volume"
    );
    Ok(())
}

#[tokio::test]
async fn a_released_volume_is_scrubbed_by_request_then_offered_again() -> anyhow::Result<()> {
    let (client, test, _controller, node) = setup_pool_and_node("ctl-release").await?;
    let (pool, ns) = (test.clone(), test.clone());
    // NB: volume ids of this run only: a PV left by an earlier run on the same cluster holds its id.
    let id = |v: &str| format!("uuid:{test}-{v}");
    let vols = || vec![volume(&pool, "vol1", &id("r1"), 3 * GIB)];
    publish_report(&client, &node, vols(), vec![]).await?;
    let pv = local_pv_name(&pool, &node, "vol1", &id("r1"));
    wait_for_pvs(&client, &pool, std::slice::from_ref(&pv)).await?;
    bind(&client, &ns, "data", &pv, &test).await?;
    let old_uid = Api::<PersistentVolume>::all(client.clone())
        .get(&pv)
        .await?
        .metadata
        .uid
        .expect("uid");
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    let claim_uid = claims.get("data").await?.metadata.uid.expect("uid");

    claims.delete("data", &DeleteParams::default()).await?;
    // The controller asks this node's agent to scrub exactly that PV's volume.
    let reports: Api<NodeVolumes> = Api::all(client.clone());
    let request = wait_for("a cleanup request", LONG, || async {
        Ok(reports.get(&node).await?.spec.cleanups.first().cloned())
    })
    .await?;
    assert_eq!(
        (
            request.persistent_volume.as_str(),
            request.pv_uid.as_str(),
            request.volume_id.as_str()
        ),
        (pv.as_str(), old_uid.as_str(), id("r1").as_str())
    );
    assert_eq!(
        request.claim_uid, claim_uid,
        "the claim it was released from"
    );
    assert_eq!(request.method, volpool_api::CleanupMethod::Wipe);
    assert!(
        Api::<PersistentVolume>::all(client.clone())
            .get_opt(&pv)
            .await?
            .is_some(),
        "kept until scrubbed"
    );

    // The agent reports the scrub done.
    let done = json!({"volumeID": id("r1"), "pvUID": old_uid, "result": "Succeeded",
                      "finishedAt": k8s_openapi::jiff::Timestamp::now().to_string()});
    publish_report(&client, &node, vols(), vec![done]).await?;
    let fresh = wait_for_pv(&client, &pv, "recreated", |p| {
        p.metadata.uid.as_deref() != Some(old_uid.as_str())
    })
    .await?;
    assert!(claim_ref(&fresh).is_none());
    wait_for_pv(&client, &pv, "Available", |p| phase(p) == Some("Available")).await?;
    wait_for_event(&client, &ns, "data", "Released").await?;
    wait_for_event(&client, "kube-system", &pv, "Scrubbed").await?;
    wait_for("the request withdrawn", LONG, || async {
        Ok(reports
            .get(&node)
            .await?
            .spec
            .cleanups
            .is_empty()
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_node_takes_its_available_pvs_and_marks_bound_ones() -> anyhow::Result<()> {
    let (client, test, _controller) = setup_pool("ctl-node", false, json!({})).await?;
    let (pool, ns) = (test.clone(), test.clone());
    let (gone, stays) = (format!("{test}-gone"), format!("{test}-stays"));
    let disks = |node: &str| {
        vec![
            volume(&pool, "a", &format!("uuid:{node}-a"), GIB),
            volume(&pool, "b", &format!("uuid:{node}-b"), GIB),
        ]
    };
    for node in [&gone, &stays] {
        create_node(&client, node).await?;
        publish_report(&client, node, disks(node), vec![]).await?;
    }
    let name = |node: &str, e: &str| local_pv_name(&pool, node, e, &format!("uuid:{node}-{e}"));
    let all = [
        name(&gone, "a"),
        name(&gone, "b"),
        name(&stays, "a"),
        name(&stays, "b"),
    ];
    wait_for_pvs(&client, &pool, &all).await?;
    bind(&client, &ns, "data", &name(&gone, "b"), &test).await?;

    // Someone edits the node label of an Available PV: it is still that disk's PV (same UID),
    // and the label is written back.
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let edited = name(&stays, "a");
    let uid = pvs.get(&edited).await?.metadata.uid;
    let relabel = json!({"metadata": {"labels": {"volpool.io/node": gone}}});
    pvs.patch(&edited, &PatchParams::default(), &Patch::Merge(&relabel))
        .await?;
    let restored = wait_for_pv(&client, &edited, "label written back", |p| {
        label(p, "volpool.io/node") == Some(stays.as_str())
    })
    .await?;
    assert_eq!(
        restored.metadata.uid, uid,
        "the PV was deleted and made again"
    );
    wait_for_event(&client, "kube-system", &edited, "LabelRestored").await?;
    let gone_events = events_about(&client, "kube-system", &edited, "NodeGone").await?;
    assert!(gone_events.is_empty(), "{gone_events:?}");
    wait_for_pvs(&client, &pool, &all).await?;

    Api::<Node>::all(client.clone())
        .delete(&gone, &DeleteParams::default())
        .await?;
    wait_for_pvs(
        &client,
        &pool,
        &[name(&gone, "b"), name(&stays, "a"), name(&stays, "b")],
    )
    .await?;
    wait_for_pv(&client, &name(&gone, "b"), "labelled node-gone", |p| {
        label(p, "volpool.io/health") == Some("node-gone")
    })
    .await?;
    // Its NodeVolumes went with it (ownerReference).
    let reports: Api<NodeVolumes> = Api::all(client.clone());
    wait_for("the NodeVolumes garbage-collected", LONG, || async {
        Ok(reports.get_opt(&gone).await?.is_none().then_some(()))
    })
    .await?;

    // The node comes back under the same name (a rebuilt VM) and its agent reports the same
    // disks: the Bound PV is that disk's again, with the new Node's UID.
    let back = create_node(&client, &gone).await?;
    publish_report(&client, &gone, disks(&gone), vec![]).await?;
    let taken = wait_for_pv(&client, &name(&gone, "b"), "node-gone cleared", |p| {
        label(p, "volpool.io/health").is_none()
    })
    .await?;
    let annotations = taken.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("volpool.io/node-uid"),
        back.metadata.uid.as_ref()
    );
    assert_eq!(phase(&taken), Some("Bound"));
    wait_for_event(&client, &ns, "data", "NodeReturned").await?;
    wait_for_pvs(&client, &pool, &all).await?;
    Ok(())
}

#[tokio::test]
async fn a_statefulset_of_three_gets_three_bound_claims_on_three_nodes() -> anyhow::Result<()> {
    let (client, test, _controller) = setup_pool("ctl-sts", true, json!({})).await?;
    let (pool, ns) = (test.clone(), test.clone());
    let nodes: Vec<String> = (0..3).map(|i| format!("{test}-n{i}")).collect();
    for node in &nodes {
        create_node(&client, node).await?;
        publish_report(
            &client,
            node,
            vec![volume(&pool, "vol1", &format!("uuid:{node}"), 5 * GIB)],
            vec![],
        )
        .await?;
    }
    let names: Vec<String> = nodes
        .iter()
        .map(|n| local_pv_name(&pool, n, "vol1", &format!("uuid:{n}")))
        .collect();
    wait_for_pvs(&client, &pool, &names).await?;

    let placed = spread_statefulset(&client, &ns, &test, "1Gi").await?;
    for (node, pv) in &placed {
        let pv = Api::<PersistentVolume>::all(client.clone()).get(pv).await?;
        assert_eq!(
            label(&pv, "volpool.io/node"),
            Some(node.as_str()),
            "the claim's PV is on its pod's node"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_follower_takes_over_when_the_leader_is_killed() -> anyhow::Result<()> {
    let (client, test) = setup("ctl-ha").await?;
    let pool = test.clone();
    create_class(&client, &test, true).await?;
    create_pool(&client, &test, &pool, &test, json!({})).await?;
    let mut replicas = [
        Controller::start(&test, &format!("{test}-a")).await?,
        Controller::start(&test, &format!("{test}-b")).await?,
    ];
    // NB: volume ids of this run only: a PV left by an earlier run on the same cluster holds its id.
    let id = |v: &str| format!("uuid:{test}-{v}");
    let node = format!("{test}-n");
    create_node(&client, &node).await?;
    publish_report(
        &client,
        &node,
        vec![volume(&pool, "vol1", &id("h1"), GIB)],
        vec![],
    )
    .await?;
    let first = local_pv_name(&pool, &node, "vol1", &id("h1"));
    wait_for_pvs(&client, &pool, std::slice::from_ref(&first)).await?;

    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let holder = leases
        .get(&test)
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a leader");
    let leader = replicas
        .iter()
        .position(|r| r.identity == holder)
        .expect("holder is one of ours");
    let follower = 1 - leader;
    assert_eq!(
        replicas[follower]
            .metric("volpool_controller_leader", &[])
            .await?,
        0.0
    );
    assert_eq!(
        replicas[follower]
            .metric("volpool_controller_api_writes_total", &[])
            .await?,
        0.0,
        "only the leader writes"
    );
    replicas[leader].kill();

    publish_report(
        &client,
        &node,
        vec![
            volume(&pool, "vol1", &id("h1"), GIB),
            volume(&pool, "vol2", &id("h2"), GIB),
        ],
        vec![],
    )
    .await?;
    let second = local_pv_name(&pool, &node, "vol2", &id("h2"));
    wait_for_pvs(&client, &pool, &[first, second]).await?;
    assert_eq!(
        replicas[follower]
            .metric("volpool_controller_leader", &[])
            .await?,
        1.0
    );
    let holder = leases
        .get(&test)
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(
        holder.as_deref(),
        Some(replicas[follower].identity.as_str())
    );
    Ok(())
}

#[tokio::test]
async fn bad_input_gives_conditions_and_leaves_other_pools_alone() -> anyhow::Result<()> {
    let (client, test) = setup("ctl-bad").await?;
    create_class(&client, &test, true).await?;
    let (good, invalid, classless) = (
        format!("{test}-good"),
        format!("{test}-invalid"),
        format!("{test}-classless"),
    );
    create_pool(&client, &test, &good, &test, json!({})).await?;
    create_pool(
        &client,
        &test,
        &invalid,
        &test,
        json!({"local": {"discoveryDir": "/mnt/other", "minCapacity": "lots"}}),
    )
    .await?;
    create_pool(
        &client,
        &test,
        &classless,
        "no-such-class",
        json!({"local": {"discoveryDir": "/mnt/third"}}),
    )
    .await?;
    let _controller = Controller::start(&test, &format!("{test}-a")).await?;
    // NB: volume ids of this run only: a PV left by an earlier run on the same cluster holds its id.
    let id = |v: &str| format!("uuid:{test}-{v}");
    let node = format!("{test}-n");
    create_node(&client, &node).await?;
    let mut other = volume(&invalid, "x", &id("x"), GIB);
    other["path"] = json!("/mnt/other/x");
    let mut third = volume(&classless, "t", &id("t"), GIB);
    third["path"] = json!("/mnt/third/t");
    publish_report(
        &client,
        &node,
        vec![volume(&good, "vol1", &id("g1"), GIB), other, third],
        vec![],
    )
    .await?;
    // A report from a node that does not exist (no ownerReference, so nothing collects it).
    let ghost = format!("{test}-ghost");
    let reports: Api<NodeVolumes> = Api::all(client.clone());
    let agent = PatchParams::apply(volpool_api::FIELD_MANAGER_AGENT).force();
    reports.patch(&ghost, &agent, &Patch::Apply(json!({"apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes", "metadata": {"name": ghost}, "spec": {}}))).await?;
    let status = json!({"apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes",
                        "status": {"agentVersion": "e2e", "volumes": [volume(&good, "vol9", &id("ghost"), GIB)]}});
    reports
        .patch_status(&ghost, &agent, &Patch::Apply(&status))
        .await?;

    wait_for_pvs(
        &client,
        &good,
        &[local_pv_name(&good, &node, "vol1", &id("g1"))],
    )
    .await?;
    let condition = |pool: String, type_: &'static str, reason: &'static str| {
        let client = client.clone();
        async move {
            wait_for_pool_condition(&client, &pool, type_, reason, LONG, |c| c.reason == reason)
                .await
        }
    };
    let refused = condition(invalid.clone(), "Ready", "InvalidSpec").await?;
    assert!(
        refused.status == "False" && refused.message.contains("minCapacity"),
        "{}",
        refused.message
    );
    let unknown = condition(good.clone(), "Degraded", "UnknownNode").await?;
    assert!(unknown.message.contains(&ghost), "{}", unknown.message);
    let class = condition(classless.clone(), "Degraded", "StorageClassNotFound").await?;
    assert!(class.message.contains("no-such-class"), "{}", class.message);
    assert!(
        pvs_of(&client, &invalid).await?.is_empty(),
        "an invalid pool gets no PVs"
    );
    assert_eq!(
        pvs_of(&client, &classless).await?.len(),
        1,
        "a missing class is a warning, not a blocker"
    );
    reports.delete(&ghost, &DeleteParams::default()).await?;
    Ok(())
}
