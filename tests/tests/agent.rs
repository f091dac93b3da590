//! volpool-agent against the real v1.20.2 control plane, each agent on its own fake node (a
//! private mount + pid namespace): it publishes NodeVolumes owned by its Node, follows mounts
//! and unmounts at once, writes nothing while nothing changes, waits out a missing Node, and
//! reports a scrub stuck on a hung mount as Running, with its age.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use volpool_api::{
    CleanupOutcome, FIELD_MANAGER_AGENT, FIELD_MANAGER_CONTROLLER, LABEL_HOSTNAME, NodeVolumes,
    NodeVolumesStatus, ServerReachability, VolumePool, VolumeReport, VolumeState,
};
use volpool_e2e::agent::{AgentNode, ApiRelay, create_released_pv, wait_for_entry};
use volpool_e2e::controller::apply_pool;
use volpool_e2e::{apply_crds, client, create_node, unique, wait_for};
use volpool_testkit::metrics::sample;
use volpool_testkit::{FakeNode, Reaper, TempDir, cargo_binary, free_port, http_get, json_diff};

/// Generous deadline for "noticed within 2 s": the figure itself is measured, not asserted.
const CHANGE_DEADLINE: Duration = Duration::from_secs(15);
const START_DEADLINE: Duration = Duration::from_secs(90);

/// One agent's world: a pool over `<tmp>/disks` selecting Node `<prefix>-node`, and a fake
/// node whose disks are tmpfs mounts there. The Node object itself is the test's to create.
struct Bed {
    client: Client,
    node: String,
    pool: String,
    disks: PathBuf,
    fake: FakeNode,
    port: u16,
    tmp: TempDir,
}

impl Bed {
    /// The pool, the fake node and the directories `dirs` under its discovery directory.
    async fn new(prefix: &str, dirs: &[&str]) -> anyhow::Result<Bed> {
        let client = client().await?;
        apply_crds(&client).await?;
        let (node, pool) = (
            unique(&format!("{prefix}-node")),
            unique(&format!("{prefix}-pool")),
        );
        let tmp = TempDir::new(&format!("volpool-e2e-{prefix}"))?;
        let disks = tmp.join("disks");
        for dir in dirs {
            std::fs::create_dir_all(disks.join(dir))?;
        }
        let spec = json!({
            "storageClassName": pool,
            "nodeSelector": {"matchLabels": {LABEL_HOSTNAME: node}},
            "local": {"discoveryDir": disks.to_string_lossy(), "minCapacity": "1Mi"},
        });
        apply_pool(&client, &pool, &pool, spec).await?;
        Ok(Bed {
            client,
            node,
            pool,
            disks,
            fake: FakeNode::new()?,
            port: free_port()?,
            tmp,
        })
    }

    /// Start the agent (resync 5 s) with the agent's own credentials.
    async fn start_agent(&self) -> anyhow::Result<Child> {
        self.fake
            .spawn_agent(&self.node, self.port, &["--resync", "5s"])
            .await
    }

    /// Mount a tmpfs of `mib` MiB on `dir` of the discovery directory, on this node only.
    fn mount(&self, dir: &str, mib: u64) -> anyhow::Result<()> {
        let path = self.disks.join(dir);
        self.fake.sh(&format!(
            "mount -t tmpfs -o size={mib}m {dir} '{}'",
            path.display()
        ))?;
        Ok(())
    }

    /// The entry for `dir` in the node's NodeVolumes, once it passes `check`.
    async fn entry(
        &self,
        dir: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&VolumeReport) -> bool,
    ) -> anyhow::Result<VolumeReport> {
        let path = self.disks.join(dir);
        wait_for_entry(&self.client, &self.node, &path, what, timeout, check).await
    }

    /// `GET /readyz` until it answers `code`: the body.
    async fn readyz(&self, code: u16) -> anyhow::Result<String> {
        wait_for(&format!("/readyz {code}"), START_DEADLINE, || async {
            Ok(Some(http_get(self.port, "/readyz")?).filter(|r| r.0 == code))
        })
        .await
        .map(|r| r.1)
    }

    /// End the fake node (the agent in it too), delete the Node and the pool.
    async fn teardown(self) -> anyhow::Result<()> {
        drop(self.fake);
        Api::<Node>::all(self.client.clone())
            .delete(&self.node, &DeleteParams::default())
            .await?;
        Api::<VolumePool>::all(self.client)
            .delete(&self.pool, &DeleteParams::default())
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn agent_publishes_node_volumes_and_follows_mounts_without_idle_writes() -> anyhow::Result<()>
{
    let bed = Bed::new("agent", &["vol-a", "vol-b", "plain"]).await?;
    let node = create_node(&bed.client, &bed.node).await?;
    bed.mount("vol-a", 16)?;
    let _agent = bed.start_agent().await?;

    let ready = |v: &VolumeReport| v.state == VolumeState::Ready;
    let a = bed
        .entry("vol-a", "vol-a Ready in NodeVolumes", START_DEADLINE, ready)
        .await?;
    assert_eq!(
        (a.pool.as_str(), a.capacity_bytes, a.fs_type.as_str()),
        (bed.pool.as_str(), 16 << 20, "tmpfs")
    );
    let api: Api<NodeVolumes> = Api::all(bed.client.clone());
    let nv = api.get(&bed.node).await?;
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
    bed.readyz(200).await?;

    // A mount appears: noticed through the mount table's poll() signal, not the 5 s resync.
    let t = Instant::now();
    bed.mount("vol-b", 8)?;
    bed.entry("vol-b", "vol-b Ready", CHANGE_DEADLINE, |v| {
        v.state == VolumeState::Ready && v.capacity_bytes == 8 << 20
    })
    .await?;
    println!("mount published after {:?}", t.elapsed());
    let t = Instant::now();
    bed.fake
        .sh(&format!("umount '{}'", bed.disks.join("vol-a").display()))?;
    bed.entry("vol-a", "vol-a NotMountPoint", CHANGE_DEADLINE, |v| {
        v.state == VolumeState::NotMountPoint
    })
    .await?;
    println!("unmount published after {:?}", t.elapsed());

    // Nothing changes for 30 s (six resyncs): not a single write. Other tests share the
    // cluster: an NFS pool one of them makes selects this node too, and the agent rightly
    // reports whether its server answers. Such a write is allowed; any other is not.
    let mut before = api.get(&bed.node).await?;
    let quiet_until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < quiet_until {
        let now = api.get(&bed.node).await?;
        let written = json_diff(
            &serde_json::to_value(&before)?,
            &serde_json::to_value(&now)?,
        );
        let (servers, rest) = split_nfs_servers(&now);
        let (servers_before, rest_before) = split_nfs_servers(&before);
        assert!(
            written.is_empty() || (rest == rest_before && servers != servers_before),
            "NodeVolumes was written although nothing changed:\n{}",
            written.join("\n")
        );
        before = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = http_get(bed.port, "/metrics")?.1;
    assert!(
        metrics.contains("volpool_volume_capacity_bytes{"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "persistentvolume=\"{}-{}-vol-b-",
            bed.pool, bed.node
        )),
        "{metrics}"
    );

    // The Node goes: its NodeVolumes goes with it (ownerReference, garbage collector).
    let node_name = bed.node.clone();
    bed.teardown().await?;
    wait_for(
        "NodeVolumes to be garbage-collected",
        START_DEADLINE,
        || async { Ok(api.get_opt(&node_name).await?.is_none().then_some(())) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn agent_waits_for_a_missing_node_then_publishes() -> anyhow::Result<()> {
    let bed = Bed::new("agent-late", &["vol"]).await?;
    bed.mount("vol", 4)?;
    let mut agent = bed.start_agent().await?;

    // Its first scan is done (its duration is in /metrics): alive, not ready, and retrying,
    // for the Node does not exist yet.
    wait_for("the first scan in /metrics", START_DEADLINE, || async {
        let metrics = http_get(bed.port, "/metrics")?.1;
        Ok(sample(&metrics, "volpool_agent_scan_duration_seconds", &[]).map(drop))
    })
    .await?;
    let (code, why) = http_get(bed.port, "/readyz")?;
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("not been published"), "{why}");
    assert_eq!(http_get(bed.port, "/healthz")?.0, 200);
    assert!(agent.try_wait()?.is_none(), "the agent must keep running");

    create_node(&bed.client, &bed.node).await?;
    bed.entry(
        "vol",
        "vol Ready after the Node appears",
        START_DEADLINE,
        |v| v.state == VolumeState::Ready,
    )
    .await?;
    bed.readyz(200).await?;
    bed.teardown().await
}

#[tokio::test]
async fn agent_rides_out_an_apiserver_outage() -> anyhow::Result<()> {
    let bed = Bed::new("agent-outage", &["before", "during"]).await?;
    create_node(&bed.client, &bed.node).await?;
    let relay = ApiRelay::start(&bed.tmp.0)?;
    bed.mount("before", 4)?;
    let mut agent =
        bed.fake
            .spawn_agent_with(&relay.kubeconfig, &bed.node, bed.port, &["--resync", "5s"])?;
    let ready = |v: &VolumeReport| v.state == VolumeState::Ready;
    bed.entry("before", "before Ready", START_DEADLINE, ready)
        .await?;

    // The apiserver goes away; a disk is mounted meanwhile; the agent keeps serving.
    relay.set_down(true);
    bed.mount("during", 4)?;
    let metrics_path = format!("path=\"{}\"", bed.disks.join("during").display());
    wait_for(
        "the new mount in /metrics during the outage",
        CHANGE_DEADLINE,
        || async {
            let metrics = http_get(bed.port, "/metrics")?.1;
            Ok(metrics.contains(&metrics_path).then_some(()))
        },
    )
    .await?;
    let api: Api<NodeVolumes> = Api::all(bed.client.clone());
    let during = api.get(&bed.node).await?.status.unwrap_or_default();
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
    bed.entry(
        "during",
        "during Ready after the outage",
        START_DEADLINE,
        ready,
    )
    .await?;
    assert!(agent.try_wait()?.is_none());
    bed.teardown().await
}

#[tokio::test]
async fn a_scrub_stuck_on_a_hung_mount_is_reported_running_with_its_age() -> anyhow::Result<()> {
    let bed = Bed::new("stuck-scrub", &["hung"]).await?;
    create_node(&bed.client, &bed.node).await?;
    let mut reaper = Reaper::default();
    let hangfs = bed
        .fake
        .command(cargo_binary("volpool-testkit", "hangfs")?)
        .arg(bed.disks.join("hung"))
        .stdout(Stdio::null())
        .spawn()?;
    reaper.0.push(hangfs);
    let _agent = bed
        .fake
        .spawn_agent(&bed.node, bed.port, &["--probe-timeout", "1s"])
        .await?;
    let hung = bed
        .entry(
            "hung",
            "the hung mount reported Stuck",
            START_DEADLINE,
            |v| v.state == VolumeState::Stuck,
        )
        .await?;
    let (node_name, port) = (bed.node.clone(), bed.port);
    let api: Api<NodeVolumes> = Api::all(bed.client.clone());
    // Its PV, released: the agent scrubs only what such a PV backs.
    let pv = unique("pv-stuck");
    let pv_uid = create_released_pv(
        &bed.client,
        &pv,
        &node_name,
        &bed.pool,
        &hung.volume_id,
        &bed.disks.join("hung"),
    )
    .await?;

    // A request made before the mount hung (the controller asks nothing of a Stuck volume):
    // the wipe waits forever for the volume's directory listing.
    let request = json!({
        "apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes",
        "metadata": {"name": node_name},
        "spec": {"cleanups": [{
            "volumeID": hung.volume_id, "persistentVolume": pv,
            "pvUID": pv_uid, "method": "Wipe",
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
            .find(|c| c.pv_uid == pv_uid && c.result == CleanupOutcome::Running))
    })
    .await?;
    let started: Timestamp = running.started_at.parse()?;
    assert!(started <= Timestamp::now(), "{running:?}");

    // Its age grows in /metrics for as long as the mount hangs; the status stays Running.
    let pv_label = format!("persistentvolume=\"{pv}\"");
    let age = || {
        let text = http_get(port, "/metrics").map(|r| r.1).unwrap_or_default();
        sample(&text, "volpool_cleanup_running_seconds", &[&pv_label])
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
    let result = status.cleanups.iter().find(|c| c.pv_uid == pv_uid);
    assert_eq!(
        result.map(|r| r.result),
        Some(CleanupOutcome::Running),
        "{status:?}"
    );
    Api::<PersistentVolume>::all(bed.client.clone())
        .delete(&pv, &DeleteParams::default())
        .await?;
    bed.teardown().await
}

/// `nv`'s status in two: the NFS servers it reports (of every NFS pool in the cluster), and
/// the rest.
fn split_nfs_servers(nv: &NodeVolumes) -> (Vec<ServerReachability>, NodeVolumesStatus) {
    let mut rest = nv.status.clone().unwrap_or_default();
    let servers = rest
        .nfs_client
        .as_mut()
        .map(|n| std::mem::take(&mut n.servers))
        .unwrap_or_default();
    (servers, rest)
}
