//! Local pools end to end, with nothing played by the test: real `volpool-agent`s, one per Node
//! object, each in its own mount + pid namespace holding real mounts (loop-backed ext4 and XFS
//! images, tmpfs), and the real `volpool-controller`, against the 1.20.2 control plane (PV
//! binder, StatefulSet controller, scheduler, garbage collector).
//!
//! ```text
//!  node ns: mounts ──► volpool-agent ──► NodeVolumes/<node> ──► volpool-controller ──► PVs
//!                          ▲                                           │
//!                          └──────── spec.cleanups (scrub) ◄───────────┘
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use volpool_api::{
    CleanupOutcome, FIELD_MANAGER_CONTROLLER, LABEL_HEALTH, LABEL_NODE, LABEL_POOL, NodeVolumes,
    VolumePool, VolumeReport, VolumeState, local_pv_name,
};
use volpool_e2e::agent::wait_for_entry;
use volpool_e2e::controller::{
    Controller, LEASE_NAMESPACE, capacity, claim_ref, create_claim, create_class, create_namespace,
    create_pool, label, phase, pvs_of, spread_statefulset, wait_for_event, wait_for_pv,
    wait_for_pvs,
};
use volpool_e2e::deploy::{AGENT, service_account_kubeconfig};
use volpool_e2e::disks::DiskNode;
use volpool_e2e::{apply_crds, client, client_of, unique, wait_for};
use volpool_testkit::{Fs, TempDir};

/// Node label that puts a test's nodes (and only them) in its pool.
const LABEL_TEST_NODE: &str = "volpool.io/e2e-node";
/// Time for a first agent start (its binary may still be building) to publish.
const START: Duration = Duration::from_secs(180);

/// One test's world: its name, directories, pool, and what to delete at the end.
struct Fixture {
    client: Client,
    test: String,
    pool: String,
    /// Host path of the discovery directory, `<tmp>/<test>/disks`.
    disks: PathBuf,
    /// Where loop images live.
    images: PathBuf,
    _dir: TempDir,
}

impl Fixture {
    /// A pool `<test>` of class `<test>` over `<tmp>/<test>/disks` on the nodes labelled for
    /// this test.
    async fn new(prefix: &str, wait_for_consumer: bool) -> anyhow::Result<Fixture> {
        let client = client().await?;
        apply_crds(&client).await?;
        let test = unique(prefix);
        let dir = TempDir::new(&test)?;
        let (disks, images) = (dir.join("disks"), dir.join("images"));
        std::fs::create_dir_all(&disks)?;
        std::fs::create_dir_all(&images)?;
        create_class(&client, &test, wait_for_consumer).await?;
        let fx = Fixture {
            client,
            pool: test.clone(),
            test,
            disks,
            images,
            _dir: dir,
        };
        fx.apply_pool(json!({})).await?;
        Ok(fx)
    }

    /// (Re)write the pool's spec: the test's nodes and directory, plus `extra` fields.
    async fn apply_pool(&self, extra: serde_json::Value) -> anyhow::Result<()> {
        let mut spec = json!({
            "nodeSelector": {"matchLabels": {LABEL_TEST_NODE: self.test}},
            "local": {"discoveryDir": self.disks.to_string_lossy(), "minCapacity": "1Mi"},
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        create_pool(&self.client, &self.test, &self.pool, &self.test, spec).await
    }

    /// Node `<test>-<suffix>` with its agent.
    async fn node(&self, suffix: &str) -> anyhow::Result<DiskNode> {
        let name = format!("{}-{suffix}", self.test);
        DiskNode::start(&self.client, &name, json!({LABEL_TEST_NODE: self.test})).await
    }

    fn path(&self, entry: &str) -> PathBuf {
        self.disks.join(entry)
    }

    /// The `Ready` volume the agent of `node` reports at `path`; waits for it.
    async fn reported_id(&self, node: &str, path: &Path) -> anyhow::Result<String> {
        let what = format!("{} Ready", path.display());
        let ready = |v: &VolumeReport| v.state == VolumeState::Ready;
        let entry = wait_for_entry(&self.client, node, path, &what, START, ready).await?;
        Ok(entry.volume_id)
    }

    /// The PV name the controller must give the volume at `entry` of `node`.
    async fn pv_name(&self, node: &str, entry: &str) -> anyhow::Result<String> {
        let id = self.reported_id(node, &self.path(entry)).await?;
        Ok(local_pv_name(&self.pool, node, entry, &id))
    }

    /// Delete what the test made in the cluster (its PVs, pool, class, namespace, nodes).
    /// Best effort: the names are unique, so leftovers of a failed run harm no one.
    async fn clean_up(self, nodes: &[&str]) {
        let c = &self.client;
        let dp = DeleteParams::default();
        let _ = Api::<Namespace>::all(c.clone())
            .delete(&self.test, &dp)
            .await;
        let _ = Api::<VolumePool>::all(c.clone())
            .delete(&self.pool, &dp)
            .await;
        let _ = Api::<StorageClass>::all(c.clone())
            .delete(&self.test, &dp)
            .await;
        let _ = Api::<Lease>::namespaced(c.clone(), LEASE_NAMESPACE)
            .delete(&self.test, &dp)
            .await;
        for node in nodes {
            let _ = Api::<Node>::all(c.clone()).delete(node, &dp).await;
        }
        let _ = Api::<PersistentVolume>::all(c.clone())
            .delete_collection(
                &dp,
                &ListParams::default().labels(&format!("{LABEL_POOL}={}", self.pool)),
            )
            .await;
    }
}

/// A claim `claim` in the test's namespace pre-bound to the PV `pv` (asking for 1 MiB: the
/// disks here are small); returns when the PV is Bound.
async fn bind(fx: &Fixture, claim: &str, pv: &str) -> anyhow::Result<()> {
    let (client, ns) = (&fx.client, &fx.test);
    create_claim(client, ns, claim, ns, "ReadWriteOnce", "1Mi", Some(pv)).await?;
    wait_for_pv(client, pv, "Bound", |p| phase(p) == Some("Bound")).await?;
    Ok(())
}

fn uid(pv: &PersistentVolume) -> String {
    pv.metadata.uid.clone().unwrap_or_default()
}

/// `kubernetes.io/hostname In [node]`, the PV's one nodeAffinity term, as (key, values).
fn affinity(pv: &PersistentVolume) -> Option<(String, Vec<String>)> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let [term] = terms.as_slice() else {
        return None;
    };
    let [req] = term.match_expressions.as_deref()? else {
        return None;
    };
    (req.operator == "In").then(|| (req.key.clone(), req.values.clone().unwrap_or_default()))
}

#[tokio::test]
async fn three_nodes_disks_become_pvs_and_a_statefulset_gets_one_per_node() -> anyhow::Result<()> {
    let fx = Fixture::new("lp-three", true).await?;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut node = fx.node(&format!("n{i}")).await?;
        // Same paths on every node, different disks: each node sees only its own mounts.
        node.mount_disk(&fx.images, &fx.path("disk1"), 32 + 16 * i, Fs::Ext4)?;
        node.mount_tmpfs(&fx.path("tmp1"), 8 + i)?;
        nodes.push(node);
    }
    // A plain directory is reported, never offered.
    std::fs::create_dir_all(fx.path("plain"))?;
    let _controller = Controller::start(&fx.test, &format!("{}-a", fx.test)).await?;

    let mut expected = BTreeMap::new();
    for node in &nodes {
        for entry in ["disk1", "tmp1"] {
            let name = fx.pv_name(&node.name, entry).await?;
            let size = node.fs_size(&fx.path(entry))?;
            expected.insert(name, (node, entry, size));
        }
    }
    let names: Vec<String> = expected.keys().cloned().collect();
    let pvs = wait_for_pvs(&fx.client, &fx.pool, &names).await?;
    for pv in &pvs {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let (node, entry, size) = expected[&name];
        let spec = pv.spec.as_ref().expect("a PV has a spec");
        let path = fx.path(entry).to_string_lossy().into_owned();
        assert_eq!(
            spec.local.as_ref().map(|l| l.path.as_str()),
            Some(path.as_str()),
            "{name}"
        );
        assert_eq!(
            capacity(pv),
            size >> 20 << 20,
            "{name}: capacity is the filesystem's size, in whole MiB"
        );
        assert_eq!(
            affinity(pv),
            Some(("kubernetes.io/hostname".into(), vec![node.name.clone()])),
            "{name}"
        );
        assert_eq!(label(pv, LABEL_NODE), Some(node.name.as_str()));
        assert_eq!(spec.storage_class_name.as_deref(), Some(fx.test.as_str()));
        assert_eq!(phase(pv), Some("Available"), "{name}");
    }
    // The ext4 disks are known by their filesystem UUID: the same PV whatever path or node
    // order, a new one for a new disk.
    for node in &nodes {
        let id = fx.reported_id(&node.name, &fx.path("disk1")).await?;
        let device = node.sh(&format!(
            "findmnt -n -o SOURCE '{}'",
            fx.path("disk1").display()
        ))?;
        let uuid = node.sh(&format!("blkid -s UUID -o value '{}'", device.trim()))?;
        assert_eq!(id, format!("uuid:{}", uuid.trim()));
    }

    // A StatefulSet of 3 with required hostname anti-affinity on a WaitForFirstConsumer class:
    // the scheduler places its pods on the 3 nodes, and each claim is bound to a PV on its
    // pod's node.
    create_namespace(&fx.client, &fx.test).await?;
    let placed = spread_statefulset(&fx.client, &fx.test, &fx.test, "4Mi").await?;
    for (node, pv) in &placed {
        let (on, entry, _) = expected
            .get(pv)
            .unwrap_or_else(|| panic!("claim bound to {pv}, not a PV of the pool"));
        assert_eq!(&on.name, node, "{pv} ({entry}) is on its pod's node");
    }

    drop(_controller);
    drop(nodes);
    let names: Vec<String> = (0..3).map(|i| format!("{}-n{i}", fx.test)).collect();
    fx.clean_up(&names.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    Ok(())
}

#[tokio::test]
async fn a_released_volume_is_scrubbed_by_the_agent_then_offered_again() -> anyhow::Result<()> {
    let fx = Fixture::new("lp-scrub", false).await?;
    let mut node = fx.node("n").await?;
    let data = fx.path("data");
    node.mount_disk(&fx.images, &data, 32, Fs::Ext4)?;
    // Next to the volume, on the host's disk: a scrub must never reach it, not even through a
    // symlink inside the volume.
    let neighbour = fx.disks.join("keep.txt");
    std::fs::write(&neighbour, "not yours")?;
    let controller = Controller::start(&fx.test, &format!("{}-a", fx.test)).await?;
    let name = fx.pv_name(&node.name, "data").await?;
    wait_for_pvs(&fx.client, &fx.pool, std::slice::from_ref(&name)).await?;
    create_namespace(&fx.client, &fx.test).await?;
    bind(&fx, "data", &name).await?;
    let old = Api::<PersistentVolume>::all(fx.client.clone())
        .get(&name)
        .await?;

    // The workload writes; then its claim is deleted.
    let d = data.display();
    node.sh(&format!(
        "mkdir -p '{d}/dir/sub' && echo data > '{d}/dir/sub/file' && echo x > '{d}/.hidden' \
         && ln -s '{}' '{d}/link' && ln -s .. '{d}/up'",
        neighbour.display()
    ))?;
    Api::<PersistentVolumeClaim>::namespaced(fx.client.clone(), &fx.test)
        .delete("data", &DeleteParams::default())
        .await?;

    // Scrubbed by the agent, then the PV is replaced by a fresh Available one.
    let fresh = wait_for_pv(&fx.client, &name, "recreated after the scrub", |p| {
        uid(p) != uid(&old) && phase(p) == Some("Available")
    })
    .await?;
    assert!(claim_ref(&fresh).is_none(), "a fresh PV has no claim");
    let left = node.sh(&format!("ls -A '{d}'"))?;
    let left: Vec<&str> = left.lines().filter(|l| *l != "lost+found").collect();
    assert!(left.is_empty(), "the volume still holds {left:?}");
    assert_eq!(
        std::fs::read_to_string(&neighbour)?,
        "not yours",
        "the file next to the volume is intact"
    );
    assert!(
        node.sh(&format!("mountpoint -q '{d}' && echo yes"))?.trim() == "yes",
        "the volume is still mounted"
    );
    // The agent reported the scrub Succeeded (its result goes once the request is withdrawn,
    // so it is read from what the controller made of it).
    let pool_label = format!("pool=\"{}\"", fx.pool);
    assert_eq!(
        controller
            .metric(
                "volpool_cleanup_duration_seconds_count",
                &[&pool_label, "result=\"succeeded\""],
            )
            .await?,
        1.0
    );
    wait_for_event(&fx.client, "kube-system", &name, "Scrubbed").await?;

    drop(controller);
    node.stop_agent();
    drop(node);
    let node_name = format!("{}-n", fx.test);
    fx.clean_up(&[&node_name]).await;
    Ok(())
}

#[tokio::test]
async fn a_scrub_of_a_bound_volume_written_with_an_agent_token_is_refused_and_the_files_stay()
-> anyhow::Result<()> {
    let fx = Fixture::new("lp-forge", false).await?;
    let mut node = fx.node("n").await?;
    let data = fx.path("data");
    node.mount_disk(&fx.images, &data, 32, Fs::Ext4)?;
    let controller = Controller::start(&fx.test, &format!("{}-a", fx.test)).await?;
    let name = fx.pv_name(&node.name, "data").await?;
    wait_for_pvs(&fx.client, &fx.pool, std::slice::from_ref(&name)).await?;
    create_namespace(&fx.client, &fx.test).await?;
    bind(&fx, "data", &name).await?;
    let d = data.display();
    node.sh(&format!(
        "mkdir -p '{d}/dir' && echo precious > '{d}/dir/file'"
    ))?;
    // The controller is down (or has a bug): nothing takes the forged request back.
    drop(controller);

    // Someone holding an agent's token asks that node's agent to wipe the Bound volume.
    let pv = Api::<PersistentVolume>::all(fx.client.clone())
        .get(&name)
        .await?;
    let agent = client_of(&service_account_kubeconfig(AGENT).await?).await?;
    let nodes: Api<NodeVolumes> = Api::all(agent);
    let forged = json!({
        "apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes",
        "metadata": {"name": node.name},
        "spec": {"cleanups": [{
            "volumeID": fx.reported_id(&node.name, &data).await?,
            "persistentVolume": name, "pvUID": uid(&pv), "method": "Wipe",
        }]},
    });
    let params = PatchParams::apply(FIELD_MANAGER_CONTROLLER).force();
    nodes
        .patch(&node.name, &params, &Patch::Apply(&forged))
        .await?;

    let result = wait_for("the forged scrub's result", START, || async {
        let status = nodes.get(&node.name).await?.status.unwrap_or_default();
        Ok(status
            .cleanups
            .into_iter()
            .find(|c| c.pv_uid == uid(&pv) && c.result != CleanupOutcome::Running))
    })
    .await?;
    assert_eq!(result.result, CleanupOutcome::Refused, "{result:?}");
    assert!(
        result.message.starts_with(&format!(
            "PersistentVolume {name} is Bound (claim {}/data",
            fx.test
        )) && result.message.ends_with("nothing was touched"),
        "{}",
        result.message
    );
    assert_eq!(node.sh(&format!("cat '{d}/dir/file'"))?, "precious\n");
    let after = Api::<PersistentVolume>::all(fx.client.clone())
        .get(&name)
        .await?;
    assert_eq!(phase(&after), Some("Bound"));

    node.stop_agent();
    drop(node);
    let node_name = format!("{}-n", fx.test);
    fx.clean_up(&[&node_name]).await;
    Ok(())
}

#[tokio::test]
async fn unmounted_and_grown_disks_reach_their_pvs() -> anyhow::Result<()> {
    let fx = Fixture::new("lp-disks", false).await?;
    let mut node = fx.node("n").await?;
    let (grow, gone, used) = (fx.path("grow"), fx.path("gone"), fx.path("used"));
    // XFS: 300 MiB is its minimum size; the image is sparse.
    node.mount_disk(&fx.images, &grow, 320, Fs::Xfs)?;
    node.mount_disk(&fx.images, &gone, 32, Fs::Ext4)?;
    node.mount_tmpfs(&used, 16)?;
    let _controller = Controller::start(&fx.test, &format!("{}-a", fx.test)).await?;
    let names = [
        fx.pv_name(&node.name, "grow").await?,
        fx.pv_name(&node.name, "gone").await?,
        fx.pv_name(&node.name, "used").await?,
    ];
    let [grow_pv, gone_pv, used_pv] = &names;
    wait_for_pvs(&fx.client, &fx.pool, &names).await?;
    create_namespace(&fx.client, &fx.test).await?;
    bind(&fx, "data", used_pv).await?;

    // The disk grows while mounted: the Available PV follows, the same PV.
    let before = wait_for_pv(&fx.client, grow_pv, "Available", |p| {
        phase(p) == Some("Available")
    })
    .await?;
    let small = node.fs_size(&grow)?;
    assert_eq!(capacity(&before), small >> 20 << 20);
    node.grow_disk(&grow, 480)?;
    let big = node.fs_size(&grow)?;
    assert!(big > small, "the filesystem grew: {small} -> {big}");
    let after = wait_for_pv(&fx.client, grow_pv, "capacity of the grown disk", |p| {
        capacity(p) == big >> 20 << 20
    })
    .await?;
    assert_eq!(uid(&after), uid(&before), "updated in place, not replaced");
    wait_for_event(&fx.client, "kube-system", grow_pv, "CapacityUpdated").await?;

    // An Available disk is unmounted: its PV goes.
    node.umount(&gone)?;
    wait_for_pvs(&fx.client, &fx.pool, &[grow_pv.clone(), used_pv.clone()]).await?;

    // A disk in use is unmounted: its PV stays, Bound, labelled missing.
    node.umount(&used)?;
    let missing = wait_for_pv(&fx.client, used_pv, "labelled missing", |p| {
        label(p, LABEL_HEALTH) == Some("missing")
    })
    .await?;
    assert_eq!(
        phase(&missing),
        Some("Bound"),
        "a Bound PV is never deleted"
    );
    wait_for_event(&fx.client, &fx.test, "data", "VolumeMissing").await?;
    let left: BTreeSet<String> = pvs_of(&fx.client, &fx.pool)
        .await?
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(!left.contains(gone_pv), "{left:?}");

    drop(_controller);
    drop(node);
    let node_name = format!("{}-n", fx.test);
    fx.clean_up(&[&node_name]).await;
    Ok(())
}

#[tokio::test]
async fn a_deleted_node_loses_its_available_pvs_and_a_killed_leader_is_replaced()
-> anyhow::Result<()> {
    let fx = Fixture::new("lp-ha", true).await?;
    let (keep, lose) = (fx.node("keep").await?, fx.node("lose").await?);
    keep.mount_tmpfs(&fx.path("vol1"), 8)?;
    lose.mount_tmpfs(&fx.path("vol1"), 8)?;
    lose.mount_tmpfs(&fx.path("vol2"), 8)?;
    let mut replicas = [
        Controller::start(&fx.test, &format!("{}-a", fx.test)).await?,
        Controller::start(&fx.test, &format!("{}-b", fx.test)).await?,
    ];
    let kept = fx.pv_name(&keep.name, "vol1").await?;
    let lost = [
        fx.pv_name(&lose.name, "vol1").await?,
        fx.pv_name(&lose.name, "vol2").await?,
    ];
    wait_for_pvs(
        &fx.client,
        &fx.pool,
        &[kept.clone(), lost[0].clone(), lost[1].clone()],
    )
    .await?;

    // The leader dies without a word.
    let holder = Api::<Lease>::namespaced(fx.client.clone(), LEASE_NAMESPACE)
        .get(&fx.test)
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    let leader = replicas
        .iter()
        .position(|r| r.identity == holder)
        .unwrap_or_else(|| panic!("the Lease holder {holder:?} is one of the replicas"));
    replicas[leader].kill();

    // Meanwhile a disk is added on one node and the other node is deleted (its agent with it).
    keep.mount_tmpfs(&fx.path("vol2"), 8)?;
    let added = fx.pv_name(&keep.name, "vol2").await?;
    let lose_name = lose.name.clone();
    drop(lose);
    Api::<Node>::all(fx.client.clone())
        .delete(&lose_name, &DeleteParams::default())
        .await?;
    let pvs = wait_for_pvs(&fx.client, &fx.pool, &[kept.clone(), added.clone()]).await?;
    let follower = &replicas[1 - leader];
    assert_eq!(
        follower.metric("volpool_controller_leader", &[]).await?,
        1.0
    );
    // One PV per volume: the new leader did not make a second one of anything.
    let ids: Vec<String> = pvs
        .iter()
        .filter_map(|p| label(p, volpool_api::LABEL_VOLUME_ID).map(String::from))
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");

    drop(replicas);
    drop(keep);
    let keep_name = format!("{}-keep", fx.test);
    fx.clean_up(&[&keep_name, &lose_name]).await;
    Ok(())
}

#[tokio::test]
async fn pool_labels_and_mount_options_removed_from_the_pool_leave_its_pvs() -> anyhow::Result<()> {
    let fx = Fixture::new("lp-settings", false).await?;
    fx.apply_pool(json!({"labels": {"team": "search"}, "mountOptions": ["noatime"]}))
        .await?;
    let node = fx.node("n").await?;
    node.mount_tmpfs(&fx.path("vol1"), 8)?;
    let _controller = Controller::start(&fx.test, &format!("{}-a", fx.test)).await?;
    let name = fx.pv_name(&node.name, "vol1").await?;
    let first = wait_for_pv(&fx.client, &name, "labelled and with mount options", |p| {
        label(p, "team") == Some("search")
            && p.spec.as_ref().and_then(|s| s.mount_options.clone()) == Some(vec!["noatime".into()])
    })
    .await?;

    // NB: a merge patch: on 1.20 an apply that drops or empties `labels` sends null, which
    // the CRD schema refuses.
    Api::<VolumePool>::all(fx.client.clone())
        .patch(
            &fx.pool,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"labels": null, "mountOptions": null}})),
        )
        .await?;
    let after = wait_for_pv(
        &fx.client,
        &name,
        "without the label and mount options",
        |p| {
            label(p, "team").is_none()
                && p.spec
                    .as_ref()
                    .and_then(|s| s.mount_options.as_ref())
                    .is_none()
        },
    )
    .await?;
    assert_eq!(uid(&after), uid(&first), "updated in place");
    // Back again: the next edit still reaches the PV.
    fx.apply_pool(json!({"labels": {"team": "logs"}})).await?;
    wait_for_pv(&fx.client, &name, "labelled again", |p| {
        label(p, "team") == Some("logs")
    })
    .await?;

    drop(_controller);
    drop(node);
    let node_name = format!("{}-n", fx.test);
    fx.clean_up(&[&node_name]).await;
    Ok(())
}
