//! The agent's limits against the real v1.20.2 control plane: Pods bound to a Node object
//! (their `status.containerStatuses[].containerID` set through the status subresource) name
//! the real processes the agent finds in pod-like cgroups on its fake node. Metrics carry
//! those names, a requirement that is not met gets one Event on its Pod (not one per scan),
//! and a container's series vanish with it.
//!
//! ```text
//!  test ──► Node + Pods (nodeName, containerStatuses) ──► kube-apiserver ◄── watch ── agent
//!       ──► cgroup pod<uid>/<id> + prlimit + python3 ──► fake node ──► agent ──► /metrics, Events
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use volpool_api::{ANNOTATION_REQUIRE_NOFILE, NodeVolumes};
use volpool_e2e::agent::AgentNode;
use volpool_e2e::{apply_crds, client, create_node, unique, wait_for};
use volpool_testkit::metrics::sample;
use volpool_testkit::{FakeNode, free_port, http_get};

const DEADLINE: Duration = Duration::from_secs(90);
const NAMESPACE: &str = "default";
/// The cgroup v1 hierarchy the pod-like cgroups are made in (cgroupfs driver naming).
const CGROUPS: &str = "/sys/fs/cgroup/pids";

/// A pod-like cgroup with one process started by `prlimit` in it, on a fake node. The process
/// is killed and the cgroup removed on drop.
struct Container {
    cgroup: PathBuf,
    child: Child,
    pid: u32,
}

impl Container {
    fn start(node: &FakeNode, pod_uid: &str, id: &str, command: &str) -> anyhow::Result<Self> {
        let cgroup = Path::new(CGROUPS).join(format!(
            "volpool-e2e-{}/kubepods/burstable/pod{pod_uid}/{id}",
            std::process::id()
        ));
        std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("cannot create cgroup {}", cgroup.display()))?;
        let (child, pid) = node.spawn_in_cgroup(&cgroup, command, "python3")?;
        Ok(Container { cgroup, child, pid })
    }

    fn locked_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .context("no VmLck")?;
        Ok(kb * 1024)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // NB: the cgroup can be removed once its process is reaped; then its empty parents.
        let deadline = Instant::now() + Duration::from_secs(10);
        let top = Path::new(CGROUPS).join(format!("volpool-e2e-{}", std::process::id()));
        let mut dir = self.cgroup.clone();
        while dir.starts_with(&top) {
            while std::fs::remove_dir(&dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !dir.pop() {
                break;
            }
        }
    }
}

/// A Pod on `node` (it never runs: there is no kubelet) whose one container has `container_id`
/// in its status, as a kubelet would report it.
async fn create_pod(
    pods: &Api<Pod>,
    name: &str,
    node: &str,
    container: &str,
    container_id: &str,
    annotations: serde_json::Value,
) -> anyhow::Result<Pod> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"nodeName": node, "automountServiceAccountToken": false,
                 "containers": [{"name": container, "image": "volpool.io/never-pulled"}]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": container, "containerID": format!("containerd://{container_id}"),
        "image": "volpool.io/never-pulled", "imageID": "", "ready": true, "restartCount": 0,
        "state": {"running": {"startedAt": now}}}]}});
    Ok(pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?)
}

async fn requirement_events(client: &Client, pod: &str) -> anyhow::Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let lp = ListParams::default().fields(&format!("regarding.name={pod}"));
    Ok(events
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("RequirementNotMet")
                && e.reporting_controller.as_deref() == Some("volpool.io/volpool-agent")
        })
        .collect())
}

fn container_id(n: u32) -> String {
    format!(
        "{:064x}",
        (u128::from(std::process::id()) << 32) | u128::from(n)
    )
}

#[tokio::test]
async fn pods_on_the_node_name_the_containers_in_metrics_and_get_an_event_when_a_requirement_is_not_met()
-> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    let node_name = unique("limits-node");
    create_node(&client, &node_name).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let (es_name, app_name) = (unique("limits-es"), unique("limits-app"));
    let (es_id, app_id) = (container_id(1), container_id(2));
    let es_pod = create_pod(
        &pods,
        &es_name,
        &node_name,
        "elasticsearch",
        &es_id,
        json!({}),
    )
    .await?;
    let app_pod = create_pod(
        &pods,
        &app_name,
        &node_name,
        "app",
        &app_id,
        json!({ANNOTATION_REQUIRE_NOFILE: "65535"}),
    )
    .await?;
    let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();

    let fake = FakeNode::new()?;
    let es = Container::start(
        &fake,
        &uid(&es_pod),
        &es_id,
        "prlimit --memlock=65536:65536 --nofile=8192:8192 --nproc=4096:4096 -- python3 -c 'import time; time.sleep(3600)' \
         org.elasticsearch.bootstrap.Elasticsearch -Ebootstrap.memory_lock=true",
    )?;
    let app = Container::start(
        &fake,
        &uid(&app_pod),
        &app_id,
        "prlimit --memlock=8388608:8388608 --nofile=1024:4096 -- python3 -c \
         'import ctypes, time; c = ctypes.CDLL(None); assert c.mlockall(1) == 0; \
         c.prctl(15, b\"locked\"); time.sleep(3600)'",
    )?;
    // NB: mlockall locks one mapping after another; the app names itself `locked` once done.
    volpool_testkit::wait_for_blocking("the app's mlockall", DEADLINE, || {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", app.pid)).ok()?;
        (comm.trim() == "locked").then_some(())
    })?;
    let port = free_port()?;
    let _agent = fake
        .spawn_agent(&node_name, port, &["--resync", "2s"])
        .await?;

    let labels = |pod: &str, container: &str| {
        format!("namespace=\"{NAMESPACE}\",pod=\"{pod}\",container=\"{container}\"")
    };
    let es_labels = labels(&es_name, "elasticsearch");
    let app_labels = labels(&app_name, "app");
    let metrics = wait_for("the named containers' series", DEADLINE, || async {
        let text = http_get(port, "/metrics")?.1;
        let named = sample(&text, "volpool_container_limit", &[&es_labels]).is_some()
            && sample(&text, "volpool_container_limit", &[&app_labels]).is_some();
        Ok(named.then_some(text))
    })
    .await?;
    let (es_series, app_series) = (es_labels.as_str(), app_labels.as_str());
    for (name, labels, want, why) in [
        (
            "volpool_container_limit",
            [es_series, "resource=\"memlock\",kind=\"soft\""],
            65536.0,
            "",
        ),
        (
            "volpool_workload_requirement_met",
            [es_series, "requirement=\"memlock\""],
            0.0,
            "",
        ),
        (
            "volpool_workload_requirement_met",
            [es_series, "requirement=\"nproc\""],
            1.0,
            "",
        ),
        (
            "volpool_workload_requirement_met",
            [app_series, "requirement=\"nofile\""],
            0.0,
            "the annotation asks for 65535: ",
        ),
    ] {
        assert_eq!(
            sample(&metrics, name, &labels),
            Some(want),
            "{name}{labels:?}: {why}{metrics}"
        );
    }
    assert_eq!(
        sample(
            &metrics,
            "volpool_container_locked_memory_bytes",
            &[&app_labels]
        ),
        Some(app.locked_bytes()? as f64),
        "{metrics}"
    );
    let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count")?;
    assert!(
        metrics.contains(&format!(
            "volpool_sysctl_vm_max_map_count {}",
            max_map_count.trim()
        )),
        "{metrics}"
    );
    let reports: Api<NodeVolumes> = Api::all(client.clone());
    wait_for("status.limits in NodeVolumes", DEADLINE, || async {
        let limits = reports
            .get_opt(&node_name)
            .await?
            .and_then(|nv| nv.status?.limits);
        Ok(limits.filter(|l| l.vm_max_map_count.to_string() == max_map_count.trim()))
    })
    .await?;

    // One Event on the Pod naming the fix, and no more while nothing changes (4 resyncs).
    let note = wait_for(
        "a RequirementNotMet Event on the Elasticsearch pod",
        DEADLINE,
        || async {
            let events = requirement_events(&client, &es_name).await?;
            Ok(events
                .into_iter()
                .filter_map(|e| e.note)
                .find(|n| n.contains("memlock")))
        },
    )
    .await?;
    assert!(
        note.contains("LimitMEMLOCK=infinity") && note.contains("container elasticsearch"),
        "{note}"
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let memlock_events = requirement_events(&client, &es_name)
        .await?
        .into_iter()
        .filter(|e| e.note.as_deref().is_some_and(|n| n.contains("memlock is")))
        .count();
    assert_eq!(memlock_events, 1, "an Event per transition, not per scan");

    // The container goes: its series go with it.
    drop(es);
    wait_for(
        "the Elasticsearch container's series to vanish",
        DEADLINE,
        || async {
            let text = http_get(port, "/metrics")?.1;
            let gone = text.contains(&app_labels) && !text.contains(&es_labels);
            Ok(gone.then_some(()))
        },
    )
    .await?;

    drop(app);
    drop(fake);
    for name in [&es_name, &app_name] {
        pods.delete(name, &DeleteParams::default().grace_period(0))
            .await?;
    }
    Api::<k8s_openapi::api::core::v1::Node>::all(client)
        .delete(&node_name, &DeleteParams::default())
        .await?;
    Ok(())
}
