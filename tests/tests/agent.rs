//! volpool-agent against the real v1.20.2 control plane, each agent on its own fake node (a
//! private mount + pid namespace): it publishes NodeVolumes owned by its Node, follows mounts
//! and unmounts at once, writes nothing while nothing changes, waits out a missing Node, and
//! reports a scrub stuck on a hung mount as Running, with its age.

use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use volpool_api::{
    CleanupOutcome, FIELD_MANAGER_AGENT, FIELD_MANAGER_CONTROLLER, LABEL_HOSTNAME, NodeVolumes,
    VolumePool, VolumeReport, VolumeState,
};
use volpool_e2e::agent::{AgentNode, ApiRelay};
use volpool_e2e::{FIELD_MANAGER, apply_crds, client, create_node, unique, wait_for};
use volpool_testkit::metrics::sample;
use volpool_testkit::{FakeNode, Reaper, TempDir, cargo_binary, free_port, http_get};

/// Generous deadline for "noticed within 2 s": the figure itself is measured, not asserted.
const CHANGE_DEADLINE: Duration = Duration::from_secs(15);
const START_DEADLINE: Duration = Duration::from_secs(90);

async fn apply_pool(
    client: &Client,
    name: &str,
    node: &str,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let pools: Api<VolumePool> = Api::all(client.clone());
    let pool = json!({
        "apiVersion": "volpool.io/v1alpha1", "kind": "VolumePool",
        "metadata": {"name": name},
        "spec": {
            "storageClassName": name,
            "nodeSelector": {"matchLabels": {LABEL_HOSTNAME: node}},
            "local": {"discoveryDir": dir.to_string_lossy(), "minCapacity": "1Mi"},
        },
    });
    pools
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&pool),
        )
        .await?;
    Ok(())
}

/// The entry of NodeVolumes/`node` at `path`, once it satisfies `check`.
async fn wait_entry(
    api: &Api<NodeVolumes>,
    node: &str,
    path: &std::path::Path,
    what: &str,
    timeout: Duration,
    check: impl Fn(&VolumeReport) -> bool,
) -> anyhow::Result<VolumeReport> {
    let path = path.to_string_lossy().into_owned();
    wait_for(what, timeout, || async {
        let Some(nv) = api.get_opt(node).await? else {
            return Ok(None);
        };
        let entry = nv
            .status
            .unwrap_or_default()
            .volumes
            .into_iter()
            .find(|v| v.path == path);
        Ok(entry.filter(|v| check(v)))
    })
    .await
}

#[tokio::test]
async fn agent_publishes_node_volumes_and_follows_mounts_without_idle_writes() -> anyhow::Result<()>
{
    let client = client().await?;
    apply_crds(&client).await?;
    let node_name = unique("agent-node");
    let node = create_node(&client, &node_name).await?;
    let tmp = TempDir::new("volpool-e2e-agent")?;
    let disks = tmp.join("disks");
    for dir in ["vol-a", "vol-b", "plain"] {
        std::fs::create_dir_all(disks.join(dir))?;
    }
    let pool = unique("agent-pool");
    apply_pool(&client, &pool, &node_name, &disks).await?;
    let fake = FakeNode::new()?;
    fake.sh(&format!(
        "mount -t tmpfs -o size=16m a '{}/vol-a'",
        disks.display()
    ))?;
    let port = free_port()?;
    let _agent = fake
        .spawn_agent(&node_name, port, &["--resync", "5s"])
        .await?;

    let api: Api<NodeVolumes> = Api::all(client.clone());
    let a = wait_entry(
        &api,
        &node_name,
        &disks.join("vol-a"),
        "vol-a Ready in NodeVolumes",
        START_DEADLINE,
        |v| v.state == VolumeState::Ready,
    )
    .await?;
    assert_eq!(
        (a.pool.as_str(), a.capacity_bytes, a.fs_type.as_str()),
        (pool.as_str(), 16 << 20, "tmpfs")
    );
    let nv = api.get(&node_name).await?;
    let owner = nv.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        owner
            .iter()
            .any(|o| o.kind == "Node" && Some(&o.uid) == node.metadata.uid.as_ref()),
        "{owner:?}"
    );
    let status = nv.status.clone().unwrap_or_default();
    assert_eq!(
        status.node_uid,
        node.metadata.uid.clone().unwrap_or_default()
    );
    let plain = status
        .volumes
        .iter()
        .find(|v| v.path.ends_with("/plain"))
        .expect("plain dir reported");
    assert_eq!(plain.state, VolumeState::NotMountPoint);
    let managers: Vec<String> = nv
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == FIELD_MANAGER_AGENT),
        "{managers:?}"
    );
    wait_for("/readyz 200", START_DEADLINE, || async {
        Ok(http_get(port, "/readyz").ok().filter(|r| r.0 == 200))
    })
    .await?;

    // A mount appears: noticed through the mount table's poll() signal, not the 5 s resync.
    let t = Instant::now();
    fake.sh(&format!(
        "mount -t tmpfs -o size=8m b '{}/vol-b'",
        disks.display()
    ))?;
    wait_entry(
        &api,
        &node_name,
        &disks.join("vol-b"),
        "vol-b Ready",
        CHANGE_DEADLINE,
        |v| v.state == VolumeState::Ready && v.capacity_bytes == 8 << 20,
    )
    .await?;
    println!("mount published after {:?}", t.elapsed());
    let t = Instant::now();
    fake.sh(&format!("umount '{}/vol-a'", disks.display()))?;
    wait_entry(
        &api,
        &node_name,
        &disks.join("vol-a"),
        "vol-a NotMountPoint",
        CHANGE_DEADLINE,
        |v| v.state == VolumeState::NotMountPoint,
    )
    .await?;
    println!("unmount published after {:?}", t.elapsed());

    // Nothing changes for 30 s (six resyncs): not a single write.
    let rv = api.get(&node_name).await?.metadata.resource_version;
    let quiet_until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < quiet_until {
        let now = api.get(&node_name).await?.metadata.resource_version;
        assert_eq!(now, rv, "NodeVolumes was written although nothing changed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = http_get(port, "/metrics")?.1;
    assert!(
        metrics.contains("volpool_volume_capacity_bytes{"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("persistentvolume=\"{pool}-{node_name}-vol-b-")),
        "{metrics}"
    );

    // The Node goes: its NodeVolumes goes with it (ownerReference, garbage collector).
    drop(fake);
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.delete(&node_name, &DeleteParams::default()).await?;
    wait_for(
        "NodeVolumes to be garbage-collected",
        START_DEADLINE,
        || async { Ok(api.get_opt(&node_name).await?.is_none().then_some(())) },
    )
    .await?;
    Api::<VolumePool>::all(client)
        .delete(&pool, &DeleteParams::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn agent_waits_for_a_missing_node_then_publishes() -> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    let node_name = unique("agent-late-node");
    let tmp = TempDir::new("volpool-e2e-late")?;
    let disks = tmp.join("disks");
    std::fs::create_dir_all(disks.join("vol"))?;
    let pool = unique("agent-late-pool");
    apply_pool(&client, &pool, &node_name, &disks).await?;
    let fake = FakeNode::new()?;
    fake.sh(&format!(
        "mount -t tmpfs -o size=4m v '{}/vol'",
        disks.display()
    ))?;
    let port = free_port()?;
    let mut agent = fake
        .spawn_agent(&node_name, port, &["--resync", "5s"])
        .await?;

    // Alive, not ready, and retrying: the Node does not exist yet.
    let (_, why) = wait_for("/readyz 503", START_DEADLINE, || async {
        Ok(http_get(port, "/readyz")
            .ok()
            .filter(|r| r.0 == 503 && r.1.contains("not been published")))
    })
    .await?;
    assert!(why.contains("not been published"), "{why}");
    assert_eq!(http_get(port, "/healthz")?.0, 200);
    assert!(agent.try_wait()?.is_none(), "the agent must keep running");

    create_node(&client, &node_name).await?;
    let api: Api<NodeVolumes> = Api::all(client.clone());
    wait_entry(
        &api,
        &node_name,
        &disks.join("vol"),
        "vol Ready after the Node appears",
        START_DEADLINE,
        |v| v.state == VolumeState::Ready,
    )
    .await?;
    wait_for("/readyz 200", START_DEADLINE, || async {
        Ok(http_get(port, "/readyz").ok().filter(|r| r.0 == 200))
    })
    .await?;

    drop(fake);
    Api::<Node>::all(client.clone())
        .delete(&node_name, &DeleteParams::default())
        .await?;
    Api::<VolumePool>::all(client)
        .delete(&pool, &DeleteParams::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn agent_rides_out_an_apiserver_outage() -> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    let node_name = unique("agent-outage-node");
    create_node(&client, &node_name).await?;
    let tmp = TempDir::new("volpool-e2e-outage")?;
    let disks = tmp.join("disks");
    for dir in ["before", "during"] {
        std::fs::create_dir_all(disks.join(dir))?;
    }
    let pool = unique("agent-outage-pool");
    apply_pool(&client, &pool, &node_name, &disks).await?;
    let relay = ApiRelay::start(&tmp.0)?;
    let fake = FakeNode::new()?;
    fake.sh(&format!(
        "mount -t tmpfs -o size=4m b '{}/before'",
        disks.display()
    ))?;
    let port = free_port()?;
    let mut agent =
        fake.spawn_agent_with(&relay.kubeconfig, &node_name, port, &["--resync", "5s"])?;
    let api: Api<NodeVolumes> = Api::all(client.clone());
    wait_entry(
        &api,
        &node_name,
        &disks.join("before"),
        "before Ready",
        START_DEADLINE,
        |v| v.state == VolumeState::Ready,
    )
    .await?;

    // The apiserver goes away; a disk is mounted meanwhile; the agent keeps serving.
    relay.set_down(true);
    fake.sh(&format!(
        "mount -t tmpfs -o size=4m d '{}/during'",
        disks.display()
    ))?;
    let metrics_path = format!("path=\"{}\"", disks.join("during").display());
    wait_for(
        "the new mount in /metrics during the outage",
        CHANGE_DEADLINE,
        || async {
            Ok(http_get(port, "/metrics")
                .ok()
                .filter(|r| r.1.contains(&metrics_path)))
        },
    )
    .await?;
    let during = api.get(&node_name).await?.status.unwrap_or_default();
    assert!(
        during
            .volumes
            .iter()
            .all(|v| !v.path.ends_with("/during") || v.state != VolumeState::Ready),
        "nothing can have been published through a relay that is down"
    );
    assert!(
        agent.try_wait()?.is_none(),
        "the agent must survive the outage"
    );

    // It comes back: the change is published without a restart of the agent.
    relay.set_down(false);
    wait_entry(
        &api,
        &node_name,
        &disks.join("during"),
        "during Ready after the outage",
        START_DEADLINE,
        |v| v.state == VolumeState::Ready,
    )
    .await?;
    assert!(agent.try_wait()?.is_none());

    drop(fake);
    Api::<Node>::all(client.clone())
        .delete(&node_name, &DeleteParams::default())
        .await?;
    Api::<VolumePool>::all(client)
        .delete(&pool, &DeleteParams::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_scrub_stuck_on_a_hung_mount_is_reported_running_with_its_age() -> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    let node_name = unique("stuck-scrub");
    create_node(&client, &node_name).await?;
    let tmp = TempDir::new("volpool-e2e-stuck-scrub")?;
    let disks = tmp.join("disks");
    std::fs::create_dir_all(disks.join("hung"))?;
    let pool = unique("stuck-pool");
    apply_pool(&client, &pool, &node_name, &disks).await?;
    let fake = FakeNode::new()?;
    let mut reaper = Reaper::default();
    let hangfs = fake
        .command(cargo_binary("volpool-testkit", "hangfs")?)
        .arg(disks.join("hung"))
        .stdout(Stdio::null())
        .spawn()?;
    reaper.0.push(hangfs);
    let port = free_port()?;
    let _agent = fake
        .spawn_agent(&node_name, port, &["--probe-timeout", "1s"])
        .await?;
    let api: Api<NodeVolumes> = Api::all(client.clone());
    let hung = wait_entry(
        &api,
        &node_name,
        &disks.join("hung"),
        "the hung mount reported Stuck",
        START_DEADLINE,
        |v| v.state == VolumeState::Stuck,
    )
    .await?;

    // A request made before the mount hung (the controller asks nothing of a Stuck volume):
    // the wipe waits forever for the volume's directory listing.
    let request = json!({
        "apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes",
        "metadata": {"name": node_name},
        "spec": {"cleanups": [{
            "volumeID": hung.volume_id, "persistentVolume": "pv-stuck",
            "pvUID": "uid-stuck", "method": "Wipe",
        }]},
    });
    let params = PatchParams::apply(FIELD_MANAGER_CONTROLLER);
    api.patch(&node_name, &params, &Patch::Apply(&request))
        .await?;
    let running = wait_for("the scrub reported Running", CHANGE_DEADLINE, || async {
        let status = api.get(&node_name).await?.status.unwrap_or_default();
        Ok(status
            .cleanups
            .into_iter()
            .find(|c| c.pv_uid == "uid-stuck" && c.result == CleanupOutcome::Running))
    })
    .await?;
    let started: Timestamp = running.started_at.parse()?;
    assert!(started <= Timestamp::now(), "{running:?}");

    // Its age grows in /metrics for as long as the mount hangs; the status stays Running.
    let age = || {
        let text = http_get(port, "/metrics").map(|r| r.1).unwrap_or_default();
        sample(
            &text,
            "volpool_cleanup_running_seconds",
            &["persistentvolume=\"pv-stuck\""],
        )
    };
    let first = wait_for("the running scrub in /metrics", CHANGE_DEADLINE, || async {
        Ok(age())
    })
    .await?;
    wait_for("its age to grow by 3 s", CHANGE_DEADLINE, || async {
        Ok(age().filter(|a| *a >= first + 3.0))
    })
    .await?;
    let status = api.get(&node_name).await?.status.unwrap_or_default();
    let result = status.cleanups.iter().find(|c| c.pv_uid == "uid-stuck");
    assert_eq!(
        result.map(|r| r.result),
        Some(CleanupOutcome::Running),
        "{status:?}"
    );

    drop(fake);
    Api::<Node>::all(client.clone())
        .delete(&node_name, &DeleteParams::default())
        .await?;
    Api::<VolumePool>::all(client)
        .delete(&pool, &DeleteParams::default())
        .await?;
    Ok(())
}
