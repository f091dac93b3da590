//! Every panel query of `dashboards/*.json` returns data from a real Prometheus scraping the
//! real agent and controller.
//!
//! ```text
//!  FakeNode (tmpfs disk, plain dir) ── volpool-agent ──┐            ┌── NfsServer (ganesha)
//!  kube-apiserver ◄── ApiRelay ◄── volpool-controller ─┤ /metrics   │   NFSv3 from the controller
//!                                                      ▼            │
//!                           prometheus (1 s scrapes, node + cluster target labels)
//!                                                      ▲
//!  test: every panel target, `$cluster` = the cluster variable's value, `$node`/`$pool` = `.*`
//! ```
//!
//! The environment exercises what the panels show: a local pool and an NFS pool on the node,
//! two claims released and scrubbed (cleanup histogram), an apiserver outage seen by the
//! controller (errors by category), a container runtime daemon and an Elasticsearch-like
//! container process in a pod's cgroup (limits, locked memory, requirements).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use volpool_api::{LABEL_HOSTNAME, VolumePool};
use volpool_e2e::agent::{AgentNode, ApiRelay};
use volpool_e2e::controller::{
    Controller, LONG, apply_pool, create_class, create_namespace, pvs_of,
};
use volpool_e2e::nfs::NfsServer;
use volpool_e2e::prometheus::{Prometheus, Target, has_a_number, unix_now};
use volpool_e2e::{apply_crds, client, create_node, repo_root, unique, wait_for};
use volpool_testkit::{FakeNode, TempDir, free_port};

/// The `cluster` target label, so the `cluster` variable has a value to substitute.
const CLUSTER: &str = "e2e";

/// Every query of a dashboard: (panel title, PromQL, instant) for each panel target.
fn panel_queries(dashboard: &Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                panel["title"].as_str().unwrap_or_default().to_string(),
                target["expr"].as_str().unwrap_or_default().to_string(),
                target["instant"] == true,
            ));
        }
    }
    out
}

/// A dashboard's query variables: (name, selector, label) of `label_values(selector, label)`.
fn variable_queries(dashboard: &Value) -> Vec<(String, String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .filter_map(|v| {
            let query = v["query"].as_str()?;
            let (selector, label) = query.strip_prefix("label_values(")?.rsplit_once(',')?;
            Some((
                v["name"].as_str()?.to_string(),
                selector.to_string(),
                label.trim().trim_end_matches(')').trim().to_string(),
            ))
        })
        .collect()
}

/// What Grafana would send: variables replaced (`$cluster` by its value, the others by "All"),
/// `$__rate_interval` by 4 scrape intervals as Grafana computes it for 1 s scrapes.
fn substitute(expr: &str, cluster: &str) -> String {
    expr.replace("$__rate_interval", "4s")
        .replace("$cluster", cluster)
        .replace("$node", ".*")
        .replace("$pool", ".*")
}

/// Bind a claim to the pool's only Available PV, release it, and wait until the controller has
/// had the volume scrubbed and offered again (a new PV UID).
async fn release_and_scrub(
    client: &kube::Client,
    ns: &str,
    pool: &str,
    class: &str,
    claim: &str,
) -> anyhow::Result<()> {
    let pv = wait_for("an Available PV of the local pool", LONG, || async {
        Ok(pvs_of(client, pool)
            .await?
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available")))
    })
    .await?;
    let name = pv.metadata.name.clone().unwrap_or_default();
    let uid = pv.metadata.uid.clone().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = serde_json::from_value(json!({
        "metadata": {"name": claim},
        "spec": {"storageClassName": class, "volumeName": name, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "16Mi"}}},
    }))?;
    claims.create(&PostParams::default(), &pvc).await?;
    wait_for(&format!("claim {claim} Bound"), LONG, || async {
        let c = claims.get(claim).await?;
        Ok((c.status.and_then(|s| s.phase).as_deref() == Some("Bound")).then_some(()))
    })
    .await?;
    claims.delete(claim, &DeleteParams::default()).await?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    wait_for(
        &format!("PV {name} scrubbed and offered again"),
        Duration::from_secs(120),
        || async {
            let pv = pvs.get_opt(&name).await?;
            Ok(pv
                .filter(|p| p.metadata.uid.as_deref() != Some(uid.as_str()))
                .map(|_| ()))
        },
    )
    .await
}

/// Cgroup directories made for the test: their processes killed and the directories removed
/// on drop.
#[derive(Default)]
struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    /// Create `<root>/<path>` and the parents it needs.
    fn create(&mut self, root: &Path, path: &str) -> anyhow::Result<PathBuf> {
        let mut dir = root.to_path_buf();
        for part in path.split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)?;
                self.0.push(dir.clone());
            }
        }
        Ok(dir)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for dir in self.0.iter().rev() {
            // NB: a cgroup can be removed only once its last process is gone.
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.split_whitespace() {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", pid])
                        .status();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A hierarchy to make pod-like cgroups in: cgroup v1's `pids` where mounted, else v2.
fn cgroup_root() -> PathBuf {
    [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.join("cgroup.procs").exists())
    .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"))
}

/// What the limits panels show, on `node`: a container runtime daemon (a `sleep` named
/// containerd) and an "Elasticsearch" container: a process in the cgroup the kubelet's
/// cgroupfs driver would make for a Pod of the API (`pod<uid>/<container id>`), which the
/// Pod's status names. Returns the processes (nsenter on the host side).
async fn runtime_and_container(
    client: &kube::Client,
    node: &FakeNode,
    node_name: &str,
    ns: &str,
    dir: &TempDir,
    cgroups: &mut Cgroups,
) -> anyhow::Result<Vec<Child>> {
    let mut children = Vec::new();
    let daemon = dir.join("containerd");
    std::fs::copy("/bin/sleep", &daemon)?;
    children.push(
        node.command(&daemon)
            .arg("3600")
            .stdin(Stdio::null())
            .spawn()?,
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "es-0"},
        "spec": {"nodeName": node_name, "automountServiceAccountToken": false,
                 "containers": [{"name": "elasticsearch", "image": "elasticsearch:8"}]},
    }))?;
    let uid = pods
        .create(&PostParams::default(), &pod)
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let container_id = format!("{:0>64}", std::process::id());
    let status = json!({"status": {"containerStatuses": [{
        "name": "elasticsearch", "containerID": format!("containerd://{container_id}"),
        "image": "elasticsearch:8", "imageID": "", "ready": true, "restartCount": 0}]}});
    pods.patch_status("es-0", &PatchParams::default(), &Patch::Merge(status))
        .await?;
    let cgroup = cgroups.create(
        &cgroup_root(),
        &format!("{ns}/kubepods/burstable/pod{uid}/{container_id}"),
    )?;
    let script = format!(
        "echo $$ > {} && exec python3 -c 'import time; time.sleep(3600)' \
         org.elasticsearch.bootstrap.Elasticsearch -Ebootstrap.memory_lock=true",
        cgroup.join("cgroup.procs").display()
    );
    children.push(
        node.command("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()?,
    );
    Ok(children)
}

#[tokio::test]
async fn every_dashboard_panel_returns_data_from_a_live_prometheus() -> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    let test = unique("e2e-dash");
    let started = unix_now();

    // A node with a 64 MiB tmpfs "disk" and a plain directory in its discovery dir.
    let node_name = format!("{test}-n1");
    create_node(&client, &node_name).await?;
    let disks = TempDir::new(&format!("{test}-disks"))?;
    let node = FakeNode::new()?;
    let dir = disks.0.display().to_string();
    node.sh(&format!(
        "mkdir -p {dir}/vol1 {dir}/plain && mount -t tmpfs -o size=64m tmpfs {dir}/vol1"
    ))?;
    let export = TempDir::new(&format!("{test}-export"))?;
    let nfs = NfsServer::start(&[&export.0])?;

    let ns = test.clone();
    create_namespace(&client, &ns).await?;
    let local = format!("{test}-local");
    let shared = format!("{test}-nfs");
    create_class(&client, &local, false).await?;
    create_class(&client, &shared, false).await?;
    let on_node = json!({"matchLabels": {LABEL_HOSTNAME: node_name}});
    apply_pool(
        &client,
        &test,
        &local,
        json!({"storageClassName": local, "nodeSelector": on_node,
               "local": {"discoveryDir": dir, "minCapacity": "16Mi"}}),
    )
    .await?;
    apply_pool(
        &client,
        &test,
        &shared,
        json!({"storageClassName": shared, "nodeSelector": on_node,
               "nfs": {"server": nfs.address(), "path": export.0.display().to_string(),
                       "volumeSize": "1Gi", "minAvailable": 2, "maxVolumes": 5}}),
    )
    .await?;

    // The controller reaches the apiserver through a relay the test can cut.
    let relay = ApiRelay::start(&disks.0)?;
    let controller = Controller::spawn(&test, &test, &relay.kubeconfig, "default", &[])?;
    let mut cgroups = Cgroups::default();
    let mut processes =
        runtime_and_container(&client, &node, &node_name, &ns, &disks, &mut cgroups).await?;
    let agent_port = free_port()?;
    let mut agent = node.spawn_agent(&node_name, agent_port, &[]).await?;

    let prometheus = Prometheus::start(&[
        Target::new("volpool-agent", &format!("127.0.0.1:{agent_port}"))
            .label("node", &node_name)
            .label("cluster", CLUSTER),
        Target::new(
            "volpool-controller",
            &format!("127.0.0.1:{}", controller.port),
        )
        .label("cluster", CLUSTER),
    ])
    .await?;
    let controller_log_tail = || controller.log_tail(30);

    // Released claims, scrubbed by the agent: twice, so the cleanup histogram's counters rise
    // after Prometheus first saw them (rate() needs an increase, not a new series).
    for round in 0..2 {
        release_and_scrub(&client, &ns, &local, &local, &format!("data-{round}"))
            .await
            .map_err(|e| e.context(controller_log_tail()))?;
        wait_for("Prometheus to have scraped the cleanup", LONG, || async {
            let seen = prometheus.query(&format!(
                "sum(volpool_cleanup_duration_seconds_count{{pool=\"{local}\"}}) >= {}",
                round + 1
            ))?;
            Ok((!seen.is_empty()).then_some(()))
        })
        .await?;
    }

    // An apiserver outage the controller notices (watch errors), long enough for two scrapes
    // with a rising error counter.
    relay.set_down(true);
    let outage = wait_for("controller errors rising in Prometheus", LONG, || async {
        let rising = prometheus.query("sum(increase(volpool_controller_errors_total[10s])) > 0")?;
        Ok((!rising.is_empty()).then_some(()))
    })
    .await;
    relay.set_down(false);
    outage.map_err(|e| e.context(controller_log_tail()))?;

    // Every panel query, as Grafana would send it, must come back with a number.
    let dashboards: Vec<(String, Value)> = ["pools.json", "nodes.json"]
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(repo_root().join("dashboards").join(file))?;
            Ok((file.to_string(), serde_json::from_str(&text)?))
        })
        .collect::<anyhow::Result<_>>()?;
    let clusters = prometheus.label_values("volpool_pool_volumes", "cluster")?;
    assert_eq!(clusters, [CLUSTER], "the cluster variable's values");
    // NB: polled, as the last scrapes of a series may still be coming in.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let checked = loop {
        let mut checked = BTreeSet::new();
        let mut empty = Vec::new();
        for (file, dashboard) in &dashboards {
            for (name, selector, label) in variable_queries(dashboard) {
                let selector = substitute(&selector, CLUSTER);
                if prometheus.label_values(&selector, &label)?.is_empty() {
                    empty.push(format!(
                        "{file}: variable {name}: label_values({selector}, {label})"
                    ));
                }
            }
            for (title, expr, instant) in panel_queries(dashboard) {
                let expr = substitute(&expr, CLUSTER);
                let result = if instant {
                    prometheus.query(&expr)?
                } else {
                    prometheus.query_range(&expr, started, 1.0)?
                };
                if has_a_number(&result) {
                    checked.insert(format!("{file}: {title}"));
                } else {
                    empty.push(format!("{file}: panel {title:?}: {expr}"));
                }
            }
        }
        if empty.is_empty() {
            break checked;
        }
        if std::time::Instant::now() > deadline {
            let down = prometheus.targets_down().unwrap_or_default();
            let _ = agent.kill();
            anyhow::bail!(
                "queries without data after 90 s:\n{}\ntargets down: {down:?}\n{}",
                empty.join("\n"),
                controller_log_tail()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert!(checked.len() > 20, "too few panels checked: {checked:?}");

    let _ = agent.kill();
    let _ = agent.wait();
    drop(node);
    for child in &mut processes {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(cgroups);
    // NB: no kubelet confirms a graceful deletion.
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    Api::<Pod>::namespaced(client.clone(), &ns)
        .delete("es-0", &now)
        .await?;
    for pool in [&local, &shared] {
        Api::<VolumePool>::all(client.clone())
            .delete(pool, &DeleteParams::default())
            .await?;
    }
    for pv in pvs_of(&client, &local)
        .await?
        .into_iter()
        .chain(pvs_of(&client, &shared).await?)
    {
        let name = pv.metadata.name.unwrap_or_default();
        Api::<PersistentVolume>::all(client.clone())
            .delete(&name, &DeleteParams::default())
            .await?;
    }
    drop(nfs);
    Ok(())
}
