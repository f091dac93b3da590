//! Smoke test: every API call volpool relies on works against the real v1.20.2 apiserver, and
//! the values read back are the ones written.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde_json::json;
use volpool_api::{NodeVolumes, VolumePool, VolumeState};
use volpool_e2e::{FIELD_MANAGER, apply_crds, client, create_node, unique};

fn apply() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

#[tokio::test]
async fn server_is_kubernetes_1_20_2() -> anyhow::Result<()> {
    let version = client().await?.apiserver_version().await?;
    println!("apiserver gitVersion {}", version.git_version);
    assert_eq!(version.git_version, "v1.20.2");
    Ok(())
}

#[tokio::test]
async fn volume_pool_round_trip_with_server_side_defaults() -> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    let pools: Api<VolumePool> = Api::all(client.clone());
    let name = unique("smoke-pool");
    let pool = json!({
        "apiVersion": "volpool.io/v1alpha1", "kind": "VolumePool",
        "metadata": {"name": name},
        "spec": {"storageClassName": "fast-disks", "local": {"discoveryDir": "/mnt/disks"}},
    });
    pools.patch(&name, &apply(), &Patch::Apply(&pool)).await?;
    let read = pools.get(&name).await?;
    let local = read.spec.local.as_ref().expect("local source kept");
    // Defaults written by the apiserver from the CRD schema, not by our serde defaults.
    let raw: Api<kube::api::DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::erase::<VolumePool>(&()),
    );
    let raw_spec = raw.get(&name).await?.data["spec"].clone();
    assert_eq!(raw_spec["local"]["minCapacity"], "1Gi");
    assert_eq!(raw_spec["reclaimPolicy"], "Delete");
    assert_eq!(local.discovery_dir, "/mnt/disks");
    assert_eq!(read.validate(), Ok(()));

    // Status is written through the /status subresource by server-side apply.
    let status = json!({
        "apiVersion": "volpool.io/v1alpha1", "kind": "VolumePool",
        "status": {"observedGeneration": 1, "volumes": {"available": 2, "bound": 1}, "nodes": 3},
    });
    pools
        .patch_status(&name, &apply(), &Patch::Apply(&status))
        .await?;
    let status = pools
        .get_status(&name)
        .await?
        .status
        .expect("status written");
    assert_eq!(
        (status.volumes.available, status.volumes.bound, status.nodes),
        (2, 1, 3)
    );
    pools.delete(&name, &Default::default()).await?;
    Ok(())
}

#[tokio::test]
async fn pool_with_both_or_no_source_is_refused_by_the_apiserver() -> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    let pools: Api<VolumePool> = Api::all(client);
    for spec in [
        json!({"storageClassName": "c", "local": {"discoveryDir": "/mnt/disks"},
               "nfs": {"server": "nfs.example.com", "path": "/var/nfs"}}),
        json!({"storageClassName": "c"}),
    ] {
        let name = unique("smoke-bad-pool");
        let pool = json!({"apiVersion": "volpool.io/v1alpha1", "kind": "VolumePool",
                          "metadata": {"name": name}, "spec": spec});
        let err = pools
            .patch(&name, &apply(), &Patch::Apply(&pool))
            .await
            .expect_err("the apiserver must refuse a pool without exactly one source");
        let text = err.to_string();
        assert!(text.contains("oneOf") || text.contains("one of"), "{text}");
    }
    Ok(())
}

#[tokio::test]
async fn node_volumes_and_its_status_by_server_side_apply() -> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    let node_name = unique("smoke-node");
    let node = create_node(&client, &node_name).await?;
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert!(ready, "node is Ready");
    assert!(
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_none_or(|t| t.is_empty())
    );

    let reports: Api<NodeVolumes> = Api::all(client.clone());
    let owner = node.controller_owner_ref(&()).expect("node has a uid");
    let object = json!({
        "apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes",
        "metadata": {"name": node_name, "ownerReferences": [owner]},
        "spec": {"cleanups": [{"volumeID": "uuid:1", "persistentVolume": "pv-a",
                               "pvUID": "u-1", "method": "Wipe"}]},
    });
    let agent = PatchParams::apply(volpool_api::FIELD_MANAGER_AGENT).force();
    reports
        .patch(&node_name, &agent, &Patch::Apply(&object))
        .await?;
    let status = json!({
        "apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes",
        "status": {"nodeUID": node.metadata.uid, "agentVersion": "0.1.0",
                   "volumes": [{"pool": "fast", "volumeID": "uuid:1", "path": "/mnt/disks/vol1",
                                "volumeMode": "Filesystem", "capacityBytes": 1073741824u64,
                                "state": "Ready"}],
                   "limits": {"vmMaxMapCount": 262144,
                              "runtime": {"name": "containerd", "memlockSoftBytes": null,
                                          "nofileSoft": 1048576, "nprocSoft": 4096}}},
    });
    reports
        .patch_status(&node_name, &agent, &Patch::Apply(&status))
        .await?;
    let read = reports.get(&node_name).await?;
    assert_eq!(read.spec.cleanups[0].persistent_volume, "pv-a");
    let status = read.status.expect("status written");
    assert_eq!(
        status.node_uid,
        node.metadata.uid.clone().unwrap_or_default()
    );
    assert_eq!(status.volumes[0].state, VolumeState::Ready);
    assert_eq!(status.volumes[0].capacity_bytes, 1 << 30);
    let runtime = status
        .limits
        .and_then(|l| l.runtime)
        .expect("runtime limits");
    assert_eq!(runtime.memlock_soft_bytes, None, "null means unlimited");
    assert_eq!(runtime.nofile_soft, 1_048_576);
    let owners = read.metadata.owner_references.unwrap_or_default();
    assert_eq!(owners[0].kind, "Node");
    assert_eq!(owners[0].name, node_name);
    Api::<Node>::all(client)
        .delete(&node_name, &Default::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn persistent_volumes_list_and_watch() -> anyhow::Result<()> {
    let client = client().await?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let name = unique("smoke-pv");
    let selector = format!("{}={name}", volpool_api::LABEL_POOL);
    let stream = watcher(pvs.clone(), watcher::Config::default().labels(&selector))
        .applied_objects()
        .boxed();
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {volpool_api::LABEL_POOL: name,
                     volpool_api::LABEL_MANAGED_BY: volpool_api::MANAGED_BY}},
        "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "fast-disks", "persistentVolumeReclaimPolicy": "Delete",
                 "local": {"path": "/mnt/disks/vol1"},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}},
    });
    let watched = tokio::spawn(async move {
        let mut stream = stream;
        stream.try_next().await
    });
    pvs.patch(
        &name,
        &PatchParams::apply(volpool_api::FIELD_MANAGER_CONTROLLER),
        &Patch::Apply(&pv),
    )
    .await?;
    let seen = tokio::time::timeout(Duration::from_secs(30), watched).await???;
    let seen = seen.expect("the watch delivers the new PV");
    assert_eq!(seen.metadata.name.as_deref(), Some(name.as_str()));
    let listed = pvs.list(&ListParams::default().labels(&selector)).await?;
    assert_eq!(listed.items.len(), 1);
    let spec = listed.items[0].spec.clone().expect("spec");
    assert_eq!(spec.capacity.expect("capacity")["storage"].0, "5Gi");
    assert_eq!(spec.local.expect("local").path, "/mnt/disks/vol1");
    pvs.delete(&name, &Default::default()).await?;
    Ok(())
}

#[tokio::test]
async fn nodes_storage_classes_leases_and_events() -> anyhow::Result<()> {
    let client = client().await?;
    let node_name = unique("smoke-node");
    create_node(&client, &node_name).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let listed = nodes
        .list(&ListParams::default().labels(&format!("kubernetes.io/hostname={node_name}")))
        .await?;
    assert_eq!(listed.items.len(), 1);

    let classes: Api<StorageClass> = Api::all(client.clone());
    let class = unique("smoke-class");
    let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": class}, "provisioner": "kubernetes.io/no-provisioner",
                    "volumeBindingMode": "WaitForFirstConsumer"});
    classes.patch(&class, &apply(), &Patch::Apply(&sc)).await?;
    let read = classes.get(&class).await?;
    assert_eq!(
        read.volume_binding_mode.as_deref(),
        Some("WaitForFirstConsumer")
    );

    let ns = unique("smoke-ns");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {"name": "volpool-controller"},
                       "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15}});
    leases
        .patch("volpool-controller", &apply(), &Patch::Apply(&lease))
        .await?;
    let read = leases
        .get("volpool-controller")
        .await?
        .spec
        .expect("lease spec");
    assert_eq!(read.holder_identity.as_deref(), Some("replica-a"));
    assert_eq!(read.lease_duration_seconds, Some(15));
    let lease_watch = watcher(leases.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(30), async move {
        let mut s = lease_watch;
        s.try_next().await
    })
    .await??;
    assert_eq!(
        first.and_then(|l| l.metadata.name).as_deref(),
        Some("volpool-controller")
    );

    // NB: with eventTime set, 1.20 accepts Events about cluster-scoped objects (Nodes, PVs)
    // only in kube-system (later versions also allow "default", where kube's Recorder puts them).
    let events: Api<Event> = Api::namespaced(client.clone(), "kube-system");
    let event_name = unique("volpool-smoke");
    let event = json!({
        "metadata": {"name": event_name},
        "eventTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        "reportingController": "volpool.io/volpool-controller", "reportingInstance": "replica-a",
        "action": "Provision", "reason": "Created", "type": "Normal",
        "note": "created a PersistentVolume",
        "regarding": {"apiVersion": "v1", "kind": "Node", "name": node_name},
    });
    events
        .create(&PostParams::default(), &serde_json::from_value(event)?)
        .await?;
    let listed = events
        .list(&ListParams::default().fields(&format!("regarding.name={node_name}")))
        .await?;
    let ours = listed
        .items
        .iter()
        .find(|e| e.metadata.name.as_deref() == Some(event_name.as_str()));
    assert_eq!(
        ours.and_then(|e| e.note.as_deref()),
        Some("created a PersistentVolume")
    );

    Api::<Namespace>::all(client.clone())
        .delete(&ns, &Default::default())
        .await?;
    classes.delete(&class, &Default::default()).await?;
    nodes.delete(&node_name, &Default::default()).await?;
    Ok(())
}
