//! Claims first, end to end on the real control plane (the real PV binder, the real
//! StatefulSet controller): an NFS pool with default fields serves an Elasticsearch-shaped
//! StatefulSet's ReadWriteOnce claims; a burst of claims is served by PVs made for them (never
//! two per claim, never over maxVolumes, one directory each); a claim volpool cannot serve
//! hears why, once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use volpool_api::VolumePool;
use volpool_e2e::controller::{
    Controller, apply_pool, class_and_namespace, create_claim, create_class, events_about, pvs_of,
    wait_for_event,
};
use volpool_e2e::nfs::{NfsServer, dirs_on_server, pv_dir};
use volpool_e2e::{FIELD_MANAGER, unique, wait_for};
use volpool_testkit::TempDir;

/// How long a burst may take to bind (the binder's client QPS bounds it).
const BURST: Duration = Duration::from_secs(300);

/// A pool of the test: `spec.nfs` is `nfs`, nothing else set but the class.
async fn create_nfs_pool(
    client: &Client,
    test: &str,
    nfs: Value,
    extra: Value,
) -> anyhow::Result<()> {
    let mut spec = json!({"storageClassName": test, "nfs": nfs});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    apply_pool(client, test, test, spec).await
}

fn claim_uid(pv: &PersistentVolume) -> Option<String> {
    pv.spec.as_ref()?.claim_ref.as_ref()?.uid.clone()
}

/// What each test starts from: an NFS server exporting a fresh directory, the CRDs, a
/// StorageClass and a namespace named after the test.
struct Bed {
    test: String,
    dir: TempDir,
    server: NfsServer,
    client: Client,
}

impl Bed {
    async fn new(prefix: &str) -> anyhow::Result<Bed> {
        let test = unique(prefix);
        let dir = TempDir::new(&format!("volpool-{test}"))?;
        let server = NfsServer::start(&[&dir.0])?;
        let client = class_and_namespace(&test, false).await?;
        Ok(Bed {
            test,
            dir,
            server,
            client,
        })
    }
}

/// Wait until claim `ns/name` is Bound.
async fn wait_bound(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("claim {name} Bound"),
        Duration::from_secs(120),
        || async { Ok(bound(client, ns).await?.contains_key(name).then_some(())) },
    )
    .await
}

/// Names of the claims of `ns` that are Bound.
async fn bound(client: &Client, ns: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(claims
        .items
        .into_iter()
        .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .filter_map(|c| Some((c.metadata.name?, c.spec?.volume_name?)))
        .collect())
}

#[tokio::test]
async fn an_elasticsearch_shaped_statefulset_binds_on_an_nfs_pool_with_default_fields()
-> anyhow::Result<()> {
    let Bed {
        test,
        dir,
        server,
        client,
    } = Bed::new("claims-es").await?;
    create_nfs_pool(
        &client,
        &test,
        json!({"server": server.address(), "path": dir.0.to_string_lossy()}),
        json!({}),
    )
    .await?;
    let _controller = Controller::start(&test, &format!("{test}-a")).await?;
    // The chart's shape: Parallel pod management, ReadWriteOnce claims of 5Gi, its labels.
    let labels = json!({"app": "elasticsearch-master", "chart": "elasticsearch",
                        "release": "es", "heritage": "Helm"});
    let sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "elasticsearch-master", "labels": labels,
                     "annotations": {"esMajorVersion": "8"}},
        "spec": {
            "serviceName": "elasticsearch-master-headless", "replicas": 3,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": {"app": "elasticsearch-master"}},
            "template": {
                "metadata": {"name": "elasticsearch-master", "labels": labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "elasticsearch", "image": "example.invalid/elasticsearch:8",
                        "volumeMounts": [{"name": "elasticsearch-master",
                                          "mountPath": "/usr/share/elasticsearch/data"}]}],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "elasticsearch-master"}, "spec": {
                "storageClassName": test, "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "5Gi"}}}}],
        },
    });
    Api::<StatefulSet>::namespaced(client.clone(), &test)
        .patch(
            "elasticsearch-master",
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&sts),
        )
        .await?;
    let bound = wait_for("the 3 claims Bound", BURST, || async {
        let bound = bound(&client, &test).await?;
        Ok((bound.len() == 3).then_some(bound))
    })
    .await?;
    let pvs = pvs_of(&client, &test).await?;
    for (claim, pv) in &bound {
        let pv = pvs.iter().find(|p| p.metadata.name.as_ref() == Some(pv));
        let spec = pv.and_then(|p| p.spec.clone()).unwrap_or_default();
        assert!(
            spec.access_modes
                .unwrap_or_default()
                .contains(&"ReadWriteOnce".to_string()),
            "{claim}"
        );
        let capacity = spec.capacity.unwrap_or_default();
        let text = capacity
            .get("storage")
            .map(|q| q.0.clone())
            .unwrap_or_default();
        let bytes = volpool_api::units::parse_bytes(&text).unwrap_or_default();
        assert!(
            bytes >= 5 << 30,
            "{claim}: at least the 5Gi asked, got {text}"
        );
    }
    assert_eq!(
        dirs_on_server(&dir.0, "pv-"),
        pvs.iter().map(pv_dir).collect(),
        "one directory per PV"
    );
    Ok(())
}

#[tokio::test]
async fn a_burst_of_200_claims_binds_with_one_pv_each_within_max_volumes() -> anyhow::Result<()> {
    let Bed {
        test,
        dir,
        server,
        client,
    } = Bed::new("claims-burst").await?;
    let max_volumes = 220;
    create_nfs_pool(
        &client,
        &test,
        json!({"server": server.address(), "path": dir.0.to_string_lossy(),
               "volumeSize": "1Mi", "minAvailable": 3, "maxVolumes": max_volumes}),
        json!({"releaseGracePeriod": "0s"}),
    )
    .await?;
    let _controller = Controller::start(&test, &format!("{test}-a")).await?;
    wait_for("3 Available PVs", Duration::from_secs(60), || async {
        Ok((pvs_of(&client, &test).await?.len() == 3).then_some(()))
    })
    .await?;
    for i in 0..200 {
        create_claim(
            &client,
            &test,
            &format!("c{i:03}"),
            &test,
            "ReadWriteOnce",
            "1Mi",
            None,
        )
        .await?;
    }
    // Claims deleted in the middle of the burst: their PVs, made for them, go by the release
    // rule.
    let gone: Vec<String> = (0..200).step_by(20).map(|i| format!("c{i:03}")).collect();
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &test);
    for name in &gone {
        claims.delete(name, &DeleteParams::default()).await?;
    }
    let most = std::cell::Cell::new(0);
    wait_for("190 claims Bound", BURST, || async {
        most.set(most.get().max(pvs_of(&client, &test).await?.len()));
        Ok((bound(&client, &test).await?.len() == 190).then_some(()))
    })
    .await?;
    let most = most.get();
    assert!(
        most <= max_volumes as usize,
        "{most} PVs, maxVolumes {max_volumes}"
    );
    let live: BTreeSet<String> = claims
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|c| c.metadata.uid)
        .collect();
    // No PV is left pointing at a deleted claim, and no claim has two PVs.
    let settled = wait_for("no PV of a deleted claim", BURST, || async {
        let pvs = pvs_of(&client, &test).await?;
        let stale = pvs
            .iter()
            .filter_map(claim_uid)
            .any(|uid| !live.contains(&uid));
        Ok((!stale).then_some(pvs))
    })
    .await?;
    let mut per_claim: BTreeMap<String, usize> = BTreeMap::new();
    for uid in settled.iter().filter_map(claim_uid) {
        *per_claim.entry(uid).or_default() += 1;
    }
    assert!(
        per_claim.values().all(|n| *n == 1),
        "a claim with two PVs: {per_claim:?}"
    );
    assert!(settled.len() <= max_volumes as usize);
    wait_for("one directory per PV", Duration::from_secs(60), || async {
        let pvs = pvs_of(&client, &test).await?;
        let want: BTreeSet<String> = pvs.iter().map(pv_dir).collect();
        Ok((dirs_on_server(&dir.0, "pv-") == want).then_some(()))
    })
    .await?;
    Ok(())
}

/// The NoMatchingVolume notes about `claim` from this test's controller.
async fn notes(
    client: &Client,
    ns: &str,
    claim: &str,
    instance: &str,
) -> anyhow::Result<Vec<String>> {
    Ok(events_about(client, ns, claim, "NoMatchingVolume")
        .await?
        .into_iter()
        .filter(|e| e.reporting_instance.as_deref() == Some(instance))
        .filter_map(|e| e.note)
        .collect())
}

#[tokio::test]
async fn every_stuck_claim_hears_the_fix_once() -> anyhow::Result<()> {
    let Bed {
        test,
        dir,
        server,
        client,
    } = Bed::new("claims-why").await?;
    let orphan = format!("{test}-nopool");
    create_class(&client, &orphan, false).await?;
    create_nfs_pool(
        &client,
        &test,
        json!({"server": server.address(), "path": dir.0.to_string_lossy(),
               "volumeSize": "1Mi", "minAvailable": 0, "maxVolumes": 1}),
        json!({"accessModes": ["ReadWriteMany"]}),
    )
    .await?;
    let identity = format!("{test}-a");
    let controller = Controller::start(&test, &identity).await?;
    create_claim(&client, &test, "rwo", &test, "ReadWriteOnce", "1Mi", None).await?;
    create_claim(&client, &test, "first", &test, "ReadWriteMany", "1Mi", None).await?;
    wait_bound(&client, &test, "first").await?;
    create_claim(
        &client,
        &test,
        "second",
        &test,
        "ReadWriteMany",
        "1Mi",
        None,
    )
    .await?;
    create_claim(
        &client,
        &test,
        "lost",
        &orphan,
        "ReadWriteOnce",
        "1Mi",
        None,
    )
    .await?;
    let expected = [
        (
            "rwo",
            format!(
                "pool {test} offers [ReadWriteMany]; the claim asks ReadWriteOnce: add it to spec.accessModes"
            ),
        ),
        ("second", format!("pool {test} is at maxVolumes (1)")),
        (
            "lost",
            format!(
                "no VolumePool serves class {orphan} (provisioner kubernetes.io/no-provisioner): create one, or use a class volpool serves"
            ),
        ),
    ];
    for (claim, note) in &expected {
        let seen = wait_for_event(&client, &test, claim, "NoMatchingVolume").await?;
        assert_eq!(&seen, note, "{claim}");
    }
    // Room again: the waiting claim is served. Then the export stops answering: a new claim
    // hears that.
    create_nfs_pool(
        &client,
        &test,
        json!({"server": server.address(), "path": dir.0.to_string_lossy(),
               "volumeSize": "1Mi", "minAvailable": 0, "maxVolumes": 10}),
        json!({"accessModes": ["ReadWriteMany"]}),
    )
    .await?;
    wait_bound(&client, &test, "second").await?;
    server.stop()?;
    create_claim(&client, &test, "late", &test, "ReadWriteMany", "1Mi", None).await?;
    let seen = wait_for_event(&client, &test, "late", "NoMatchingVolume").await?;
    assert!(seen.contains("the export is unreachable ("), "{seen}");
    // Three more passes (resync 1s): still one Event per claim and reason.
    let passes = controller
        .metric("volpool_controller_reconcile_duration_seconds_count", &[])
        .await?;
    wait_for("3 more passes", Duration::from_secs(60), || async {
        let now = controller
            .metric("volpool_controller_reconcile_duration_seconds_count", &[])
            .await?;
        Ok((now >= passes + 3.0).then_some(()))
    })
    .await?;
    for claim in ["rwo", "second", "lost", "late"] {
        let notes = notes(&client, &test, claim, &identity).await?;
        assert_eq!(notes.len(), 1, "{claim}: {notes:?}");
    }
    let pool = Api::<VolumePool>::all(client.clone()).get(&test).await?;
    let claims = pool.status.map(|s| s.claims).unwrap_or_default();
    assert_eq!(
        (claims.pending, claims.bound),
        (2, 2),
        "rwo and late wait; first and second bound"
    );
    Ok(())
}
