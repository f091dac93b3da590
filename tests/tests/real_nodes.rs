//! volpool on real nodes: kubelet 1.20.2, containerd and runc, kube-proxy
//! (`tests/cluster/up --nodes 2`), installed with `kubectl apply -k deploy/overlays/dev/` from
//! images built without a registry. Pods write to volpool's volumes for real.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;
use volpool_e2e::deploy::kubectl_path;
use volpool_e2e::nodes::{
    self, BUSYBOX, Disk, NODES, NfsServer, TIMEOUT, agent_command, claim, delete_pod,
    event_message, event_messages, exec, kubectl, local_pool, namespace, nfs_pool, pv_of, running,
    writer_pod,
};
use volpool_e2e::pool::wait_for_pool_condition;
use volpool_e2e::{repo_root, unique, wait_for};

// ---------------------------------------------------------------- without a cluster

/// What a Dockerfile's last stage installs and runs.
#[derive(Debug, PartialEq)]
struct Runtime {
    base: String,
    packages: Vec<String>,
    binary: String,
    user: String,
    entrypoint: Vec<String>,
}

fn dockerfile_runtime(text: &str) -> anyhow::Result<Runtime> {
    let stage = text
        .rsplit_once("\nFROM ")
        .map(|(_, s)| s)
        .context("no FROM")?;
    let base = stage.lines().next().unwrap_or_default().trim().to_owned();
    let packages = stage
        .split_once("--no-install-recommends")
        .map(|(_, rest)| {
            rest.split(['\n', '&'])
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .filter(|word| *word != "\\")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let line = |keyword: &str| {
        stage
            .lines()
            .find_map(|l| l.strip_prefix(keyword))
            .map(|v| v.trim().to_owned())
    };
    let binary = line("COPY ")
        .and_then(|copy| copy.split_whitespace().last().map(str::to_owned))
        .context("no COPY")?;
    let entrypoint = serde_json::from_str(&line("ENTRYPOINT ").context("no ENTRYPOINT")?)?;
    Ok(Runtime {
        base,
        packages,
        binary,
        user: line("USER ").unwrap_or_default(),
        entrypoint,
    })
}

#[test]
fn images_match_the_dockerfiles() -> anyhow::Result<()> {
    let out = Command::new(repo_root().join("deploy/images/build-local"))
        .arg("spec")
        .output()?;
    ensure!(out.status.success(), "build-local spec failed");
    let spec: BTreeMap<String, Value> = serde_json::from_slice(&out.stdout)?;
    for (image, local) in &spec {
        let path = repo_root().join(format!("deploy/images/{image}.Dockerfile"));
        let docker = dockerfile_runtime(&std::fs::read_to_string(&path)?)?;
        let local = Runtime {
            base: local["base"].as_str().unwrap_or_default().into(),
            packages: serde_json::from_value(local["packages"].clone())?,
            binary: local["binary"].as_str().unwrap_or_default().into(),
            user: local["user"].as_str().unwrap_or_default().into(),
            entrypoint: serde_json::from_value(local["entrypoint"].clone())?,
        };
        // NB: the Dockerfile's base is the slim variant of the same release.
        ensure!(
            docker.base.starts_with(&local.base),
            "{image}: Dockerfile base {} is not {}",
            docker.base,
            local.base
        );
        let docker = Runtime {
            base: local.base.clone(),
            ..docker
        };
        ensure!(
            docker == local,
            "{image}: {} and deploy/images/build-local differ:\n{docker:?}\n{local:?}",
            path.display()
        );
    }
    ensure!(spec.len() == 2, "build-local builds {:?}", spec.keys());
    Ok(())
}

fn kustomize(dir: &str) -> anyhow::Result<String> {
    let out = Command::new(kubectl_path())
        .args(["kustomize", dir])
        .current_dir(repo_root())
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The objects `kubectl kustomize <dir>` renders, with every container's image tag and pull
/// policy set as the dev overlay sets them.
fn as_dev(rendered: &str) -> anyhow::Result<Vec<serde_yaml::Value>> {
    rendered
        .split("\n---\n")
        .map(|doc| {
            let mut object: serde_yaml::Value = serde_yaml::from_str(doc)?;
            let containers = object
                .get_mut("spec")
                .and_then(|s| s.get_mut("template"))
                .and_then(|t| t.get_mut("spec"))
                .and_then(|s| s.get_mut("containers"))
                .and_then(|c| c.as_sequence_mut());
            for container in containers.into_iter().flatten() {
                let image = container["image"].as_str().unwrap_or_default();
                let (name, _tag) = image.rsplit_once(':').unwrap_or((image, ""));
                container["image"] = format!("{name}:dev").into();
                container["imagePullPolicy"] = "Never".into();
            }
            Ok(object)
        })
        .collect()
}

#[test]
fn dev_overlay_is_deploy_with_dev_images_never_pulled() -> anyhow::Result<()> {
    let base = kustomize("deploy/")?;
    let dev = kustomize("deploy/overlays/dev/")?;
    ensure!(
        dev.contains("image: volpool-agent:dev\n") && dev.contains("imagePullPolicy: Never\n"),
        "deploy/overlays/dev/ does not use the :dev images, never pulled"
    );
    ensure!(
        as_dev(&dev)? == as_dev(&base)?,
        "deploy/overlays/dev/ renders more or less than deploy/ with the :dev images; a file \
         added to deploy/kustomization.yaml must also be in a base the overlay uses"
    );
    Ok(())
}

// ---------------------------------------------------------------- on real nodes

/// volpool installed, a local pool named `<prefix>-…` with one disk on `node` whose PV is
/// Available, and a namespace named as the pool: the pool's name and the disk.
async fn pool_with_a_disk(prefix: &str, node: &str) -> anyhow::Result<(String, Disk)> {
    nodes::install().await?;
    let pool = unique(prefix);
    let dir = local_pool(&pool, "1Gi")?;
    // Mounted after the agent pod started: HostToContainer brings it into the agent's /host.
    let disk = Disk::mount(node, &dir, "d1", "2G")?;
    pv_of(&pool, node, "d1", Some("Available")).await?;
    namespace(&pool)?;
    Ok((pool, disk))
}

/// A claim `name` of `class` and a busybox pod `name` that mounts it and runs `script`;
/// waits until the pod runs and returns its node.
async fn pod_with_claim(
    ns: &str,
    name: &str,
    class: &str,
    mode: &str,
    script: &str,
) -> anyhow::Result<String> {
    claim(ns, name, class, mode)?;
    writer_pod(ns, name, name, script)?;
    running(ns, name).await
}

#[tokio::test]
async fn volpool_installs_on_every_node_and_reaches_the_apiserver_through_its_service()
-> anyhow::Result<()> {
    nodes::install().await?;
    let client = nodes::client().await?;
    let agents = nodes::agents_ready(&client).await?;
    let mut on: Vec<String> = agents
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    on.sort();
    ensure!(on == NODES, "agent pods on {on:?}, not on every node");
    let leader = nodes::controller_leader(&client).await?;
    ensure!(leader.starts_with("volpool-controller-"), "leader {leader}");

    // In-cluster config: the kubelet-mounted token and the `kubernetes` Service (kube-proxy's
    // rules in the node's network namespace lead to the apiserver); no KUBECONFIG (the kubelet's
    // kubeconfig path is only the network checks' fallback).
    for agent in &agents {
        let name = agent.metadata.name.as_deref().unwrap_or_default();
        let env = kubectl(&["-n", "volpool-system", "exec", name, "--", "env"])?;
        ensure!(
            env.lines().any(|l| l == "KUBERNETES_SERVICE_HOST=10.0.0.1")
                && !env.lines().any(|l| l.starts_with("KUBECONFIG=")),
            "{name}: not in-cluster config:\n{env}"
        );
        let token = kubectl(&[
            "-n",
            "volpool-system",
            "exec",
            name,
            "--",
            "cat",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
        ])?;
        ensure!(token.len() > 100, "{name}: no ServiceAccount token mounted");
    }
    // What the agents could only have written through the apiserver: their nodes' reports.
    for node in NODES {
        let report = kubectl(&[
            "get",
            "nodevolumes",
            node,
            "-o",
            "jsonpath={.status.agentVersion}",
        ])?;
        ensure!(
            !report.is_empty(),
            "no NodeVolumes status from the agent on {node}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_pod_writes_to_a_disk_mounted_on_its_node_and_the_next_pod_reads_it() -> anyhow::Result<()>
{
    let node = NODES[0];
    let (ns, disk) = pool_with_a_disk("rn-write", node).await?;
    claim(&ns, "data", &ns, "ReadWriteOnce")?;
    writer_pod(&ns, "first", "data", "echo written-by-first >> /data/note")?;
    let on = running(&ns, "first").await?;
    ensure!(
        on == node,
        "the pod runs on {on}, not on the disk's node {node}"
    );
    wait_for("the note on the node's disk", TIMEOUT, || async {
        Ok(disk.read("note").ok().filter(|n| n == "written-by-first\n"))
    })
    .await?;

    delete_pod(&ns, "first").await?;
    writer_pod(
        &ns,
        "second",
        "data",
        "echo written-by-second >> /data/note",
    )?;
    running(&ns, "second").await?;
    let note = wait_for("the second pod's line", TIMEOUT, || async {
        let note = exec(&ns, "second", "cat /data/note")?;
        Ok(note.contains("second").then_some(note))
    })
    .await?;
    ensure!(
        note == "written-by-first\nwritten-by-second\n",
        "the second pod sees {note:?}"
    );
    kubectl(&["delete", "namespace", &ns, "--wait=false"])?;
    Ok(())
}

#[tokio::test]
async fn a_statefulset_gets_a_volume_on_each_node() -> anyhow::Result<()> {
    nodes::install().await?;
    let pool = unique("rn-sts");
    let dir = local_pool(&pool, "1Gi")?;
    let disks = NODES
        .iter()
        .map(|node| Disk::mount(node, &dir, "d1", "2G"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ns = pool.clone();
    namespace(&ns)?;
    nodes::apply(&format!(
        "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: app, namespace: {ns}}}
spec:
  serviceName: app
  replicas: 2
  podManagementPolicy: Parallel
  selector: {{matchLabels: {{app: app}}}}
  template:
    metadata: {{labels: {{app: app}}}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {{topologyKey: kubernetes.io/hostname, labelSelector: {{matchLabels: {{app: app}}}}}}
      containers:
      - name: app
        image: {BUSYBOX}
        imagePullPolicy: Never
        command: [sh, -c, 'hostname > /data/who; exec sleep 3600']
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      storageClassName: {pool}
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
"
    ))?;
    let mut placed = BTreeMap::new();
    for pod in ["app-0", "app-1"] {
        placed.insert(running(&ns, pod).await?, pod);
    }
    ensure!(placed.len() == 2, "both replicas on one node: {placed:?}");
    for disk in &disks {
        let pod = placed[&disk.node];
        let who = wait_for(
            &format!("{pod}'s file on {}", disk.node),
            TIMEOUT,
            || async { Ok(disk.read("who").ok()) },
        )
        .await?;
        ensure!(
            who.trim() == pod,
            "{}'s disk has {who:?}, not {pod}",
            disk.node
        );
    }
    kubectl(&["delete", "namespace", &ns, "--wait=false"])?;
    Ok(())
}

#[tokio::test]
async fn a_released_claim_is_scrubbed_before_a_new_claim_gets_the_volume() -> anyhow::Result<()> {
    let node = NODES[1];
    let (pool, disk) = pool_with_a_disk("rn-scrub", node).await?;
    let ns = pool.clone();
    let rwo = "ReadWriteOnce";
    pod_with_claim(&ns, "old", &pool, rwo, "echo secret > /data/secret").await?;
    wait_for("the secret on the disk", TIMEOUT, || async {
        Ok(disk.read("secret").ok())
    })
    .await?;

    delete_pod(&ns, "old").await?;
    kubectl(&["-n", &ns, "delete", "pvc", "old", "--wait=false"])?;
    // The agent pod (not the test) scrubs the released volume and the PV is offered again.
    let pvs: Api<PersistentVolume> = Api::all(nodes::client().await?);
    let pv = pv_of(&pool, node, "d1", Some("Available")).await?;
    ensure!(
        pvs.get(&pv).await?.spec.and_then(|s| s.claim_ref).is_none(),
        "{pv} still names the old claim"
    );
    ensure!(
        disk.list()? == ["lost+found"],
        "the scrubbed disk has {:?}",
        disk.list()?
    );

    pod_with_claim(&ns, "new", &pool, rwo, "true").await?;
    let seen = exec(&ns, "new", "ls -A /data")?;
    ensure!(seen == "lost+found\n", "the new claim's pod sees {seen:?}");
    kubectl(&["delete", "namespace", &ns, "--wait=false"])?;
    Ok(())
}

/// The running containers of `node` by their runtime IDs, as the statuses of its pods that are
/// not being deleted name them: ID → (pod UID, container name).
async fn running_containers(node: &str) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let pods: Api<Pod> = Api::all(nodes::client().await?);
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let mut running = BTreeMap::new();
    for pod in on_node
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        for status in pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
        {
            let up = status.state.as_ref().is_some_and(|s| s.running.is_some());
            if let (true, Some(id)) = (up, &status.container_id) {
                let id = id.strip_prefix("containerd://").unwrap_or(id).to_owned();
                running.insert(id, (uid.clone(), status.name.clone()));
            }
        }
    }
    Ok(running)
}

/// soft and hard of one line of /proc/<pid>/limits ("unlimited" as None).
fn proc_limit(limits: &str, line: &str) -> anyhow::Result<[Option<u64>; 2]> {
    let rest = limits
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .with_context(|| format!("no {line:?} in {limits}"))?;
    let mut words = rest.split_whitespace().map(|w| w.parse().ok());
    Ok([words.next().flatten(), words.next().flatten()])
}

fn json_limit(value: &Value) -> [Option<u64>; 2] {
    [value["soft"].as_u64(), value["hard"].as_u64()]
}

#[tokio::test]
async fn the_agent_reads_every_real_containers_limits_and_names_an_unmet_requirement()
-> anyhow::Result<()> {
    nodes::install().await?;
    let node = NODES[0];
    let ns = unique("rn-limits");
    namespace(&ns)?;
    // Shaped like Elasticsearch: unlimited memlock and vm.max_map_count 262144. This machine
    // caps memlock at 8 MiB and has vm.max_map_count 65530.
    nodes::apply(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: es
  namespace: {ns}
  annotations: {{volpool.io/require-memlock: unlimited, volpool.io/require-max-map-count: '262144'}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: search, image: {BUSYBOX}, imagePullPolicy: Never, command: [sleep, '3600']}}
"
    ))?;
    running(&ns, "es").await?;
    let inside = exec(&ns, "es", "cat /proc/1/limits")?;

    // NB: other tests start and delete pods on this node meanwhile; a container counts when it
    // runs, in a pod not being deleted, both before and after the agent's report.
    let before = running_containers(node).await?;
    let report: Value = serde_json::from_str(&agent_command(
        node,
        &["limits", "--host-root", "/host", "-o", "json"],
    )?)?;
    let after = running_containers(node).await?;
    let expected: BTreeMap<_, _> = before
        .into_iter()
        .filter(|(id, _)| after.contains_key(id))
        .collect();
    ensure!(
        expected.len() >= 2,
        "running containers on {node}: {expected:?}"
    );
    let containers = report["containers"].as_array().context("no containers")?;
    for (id, (uid, name)) in &expected {
        let found = containers
            .iter()
            .find(|c| c["containerID"] == id.as_str())
            .with_context(|| format!("container {name} ({id}) not in the agent's report"))?;
        ensure!(
            found["podUID"] == uid.as_str() && found["container"] == name.as_str(),
            "container {id}: the agent says pod {} container {}, the pod {uid} {name}",
            found["podUID"],
            found["container"]
        );
    }
    let es = containers
        .iter()
        .find(|c| c["pod"] == "es" && c["container"] == "search")
        .context("the es pod's container is not in the report")?;
    for (resource, line) in [
        ("memlock", "Max locked memory"),
        ("nofile", "Max open files"),
        ("nproc", "Max processes"),
    ] {
        ensure!(
            json_limit(&es[resource]) == proc_limit(&inside, line)?,
            "{resource}: the agent says {}, the container's /proc/1/limits {inside}",
            es[resource]
        );
    }

    // The pod's Events say what is wrong and how to fix it, once per requirement.
    let notes = event_messages(&ns, "es", "RequirementNotMet", 2).await?;
    ensure!(
        notes
            .iter()
            .any(|n| n.contains("memlock") && n.contains("LimitMEMLOCK=infinity"))
            && notes
                .iter()
                .any(|n| n.contains("max_map_count") || n.contains("max-map-count")),
        "the Events do not name the fixes: {notes:?}"
    );
    kubectl(&["delete", "namespace", &ns, "--wait=false"])?;
    Ok(())
}

/// This kernel has no NFS client: the agents find that out, and volpool keeps pods that need
/// one off such nodes (nfsClientAffinity: true); without the affinity, the kubelet's mount fails
/// as the node's report said it would.
#[tokio::test]
async fn nfs_volumes_and_nodes_without_an_nfs_client() -> anyhow::Result<()> {
    nodes::install().await?;
    let server = NfsServer::start(NODES[1], 2).await?;
    let ns = unique("rn-nfs");
    namespace(&ns)?;
    let kept = format!("{ns}-affinity");
    let loose = format!("{ns}-loose");
    nfs_pool(&kept, &server, &server.exports[0], true)?;
    nfs_pool(&loose, &server, &server.exports[1], false)?;

    // The agents' reports name the causes before any pod tries.
    let client = nodes::client().await?;
    let reports: Api<volpool_api::NodeVolumes> = Api::all(client.clone());
    let mut causes = BTreeMap::new();
    for node in NODES {
        let cause = wait_for(
            &format!("{node}'s report of its NFS client"),
            TIMEOUT,
            || async {
                let report = reports.get(node).await?;
                let nfs = report.status.and_then(|s| s.nfs_client);
                Ok(nfs.filter(|n| !n.ready).map(|n| {
                    n.checks
                        .into_iter()
                        .filter(|c| c.status == volpool_api::CheckStatus::NonOK)
                        .map(|c| c.message)
                        .collect::<Vec<_>>()
                        .join("; ")
                }))
            },
        )
        .await?;
        ensure!(cause.contains("no NFS client"), "{node}: {cause}");
        causes.insert(node.to_owned(), cause);
        let label = kubectl(&["get", "node", node, "-o", "jsonpath={.metadata.labels}"])?;
        ensure!(
            label.contains("\"volpool.io/nfs-client\":\"missing\""),
            "{node} is not labelled nfs-client=missing: {label}"
        );
    }

    for (pool, pod) in [(&kept, "kept-off"), (&loose, "mounts")] {
        claim(&ns, pod, pool, "ReadWriteMany")?;
        writer_pod(&ns, pod, pod, "true")?;
    }
    // nfsClientAffinity: true: never scheduled, and the scheduler says why.
    event_message(
        &ns,
        "kept-off",
        "FailedScheduling",
        "volume node affinity conflict",
    )
    .await?;
    let what = "True: no node can mount";
    wait_for_pool_condition(&client, &kept, "NoReadyNodes", what, TIMEOUT, |c| {
        c.status == "True"
    })
    .await?;
    // nfsClientAffinity: false: scheduled, and the kubelet's mount fails for a reason the
    // node's report gave (mount.nfs stops at the first missing piece: rpc.statd or the kernel).
    let failed = event_message(&ns, "mounts", "FailedMount", "MountVolume.SetUp failed").await?;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let on = pods
        .get("mounts")
        .await?
        .spec
        .and_then(|s| s.node_name)
        .unwrap_or_default();
    let cause = causes.get(&on).cloned().unwrap_or_default();
    ensure!(
        (failed.contains("mount.nfs: No such device") && cause.contains("no NFS client"))
            || (failed.contains("rpc.statd is not running") && cause.contains("rpc.statd")),
        "the kubelet's FailedMount on {on} says {failed:?}; the node's report said {cause:?}"
    );
    let phase = pods.get("kept-off").await?.status.and_then(|s| s.phase);
    ensure!(phase.as_deref() == Some("Pending"), "kept-off is {phase:?}");
    kubectl(&["delete", "namespace", &ns, "--wait=false"])?;
    kubectl(&["delete", "volumepool", &kept, &loose])?;
    Ok(())
}
