//! Harness for the real `volpool-controller` binary: build it once, start it against the test
//! cluster with its own metrics port and Lease, read its `/metrics`, kill it on drop.
//! Also plays an agent: publishes `NodeVolumes` the way `volpool-agent` does (server-side
//! apply of the object with an ownerReference to its Node, then of `/status`).
//!
//! ```text
//!  test ──► Controller::start ──► target/debug/volpool-controller --pool-selector … --lease-name …
//!       ──► publish_report ──► NodeVolumes/<node> (+ /status, field manager volpool-agent)
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    Namespace, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::{Value, json};
use volpool_api::{LABEL_POOL, NodeVolumes, VolumePool};

use crate::deploy::{CONTROLLER, NAMESPACE, service_account_kubeconfig};
use volpool_testkit::{cargo_binary, free_port, http_get, metrics};

use crate::{FIELD_MANAGER, wait_for};

/// How long the e2e tests wait for the controller to converge.
pub const LONG: Duration = Duration::from_secs(60);

fn apply() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Label put on a test's VolumePools; each test's controller plans only its own pools.
pub const LABEL_TEST: &str = "volpool.io/e2e";

/// Namespace of the test controllers' Leases: the one the controller's RBAC allows.
pub const LEASE_NAMESPACE: &str = NAMESPACE;

/// Path of the controller binary, built once per test process (`$VOLPOOL_CONTROLLER_BIN`
/// overrides).
pub fn controller_binary() -> anyhow::Result<PathBuf> {
    match std::env::var_os("VOLPOOL_CONTROLLER_BIN") {
        Some(path) => Ok(PathBuf::from(path)),
        None => cargo_binary("volpool-controller", "volpool-controller"),
    }
}

/// One running controller replica.
pub struct Controller {
    child: Child,
    /// Port of its `/metrics` on 127.0.0.1.
    pub port: u16,
    /// Its Lease identity.
    pub identity: String,
    /// Its log (stdout and stderr): `<identity>.log` in [`crate::cluster_files`].
    pub log: PathBuf,
}

impl Controller {
    /// Start a replica planning the pools labelled `volpool.io/e2e=<test>`, electing with the
    /// Lease `volpool-system/<test>`. It authenticates as the ServiceAccount
    /// `volpool-system/volpool-controller` with the RBAC of `deploy/`, as in a real install.
    pub async fn start(test: &str, identity: &str) -> anyhow::Result<Controller> {
        Controller::start_with_env(test, identity, &[]).await
    }

    /// [`Controller::start`] with extra environment variables (test hooks).
    pub async fn start_with_env(
        test: &str,
        identity: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Controller> {
        let kubeconfig = service_account_kubeconfig(CONTROLLER).await?;
        Controller::spawn(test, identity, &kubeconfig, LEASE_NAMESPACE, env)
    }

    /// A replica as [`Controller::start_with_env`] starts it, with any kubeconfig (e.g. an
    /// `ApiRelay`'s) and its Lease in `lease_namespace`.
    pub fn spawn(
        test: &str,
        identity: &str,
        kubeconfig: &Path,
        lease_namespace: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Controller> {
        let port = free_port()?;
        let log = crate::cluster_files().join(format!("{identity}.log"));
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(controller_binary()?)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--lease-namespace", lease_namespace, "--lease-name", test])
            .args(["--identity", identity])
            .args(["--pool-selector", &format!("{LABEL_TEST}={test}")])
            .args(["--resync", "1s", "--lease-duration", "5s"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("failed to start volpool-controller")?;
        Ok(Controller {
            child,
            port,
            identity: identity.to_string(),
            log,
        })
    }

    /// The last `lines` lines of its log, headed `controller log:`, to explain a failure.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "controller log:\n{}",
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// GET a path of its HTTP endpoint: (status code, body).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let (port, path) = (self.port, path.to_string());
        tokio::task::spawn_blocking(move || http_get(port, &path)).await?
    }

    /// Sum of a metric's samples whose labels contain every one of `labels`.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> anyhow::Result<f64> {
        let (_, text) = self.get("/metrics").await?;
        Ok(metrics::sum(&text, name, labels))
    }

    /// API writes made while it ran `passes` more plan passes (an idle controller makes 0).
    pub async fn writes_during_passes(&self, passes: f64) -> anyhow::Result<f64> {
        let writes = self
            .metric("volpool_controller_api_writes_total", &[])
            .await?;
        let start = self
            .metric("volpool_controller_reconcile_duration_seconds_count", &[])
            .await?;
        crate::wait_for(&format!("{passes} more passes"), LONG, || async {
            let now = self
                .metric("volpool_controller_reconcile_duration_seconds_count", &[])
                .await?;
            Ok((now >= start + passes).then_some(()))
        })
        .await?;
        Ok(self
            .metric("volpool_controller_api_writes_total", &[])
            .await?
            - writes)
    }

    /// Whether the process has ended (on its own: a crash).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL, as a crashed pod.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One volume as an agent reports it.
pub fn volume(pool: &str, entry: &str, id: &str, bytes: u64) -> Value {
    json!({"pool": pool, "volumeID": id, "path": format!("/mnt/disks/{entry}"),
           "volumeMode": "Filesystem", "fsType": "ext4", "capacityBytes": bytes, "state": "Ready"})
}

/// Publish a node's report as the agent does: the object (owned by its Node), then `/status`
/// with the given volumes and cleanup results.
pub async fn publish_report(
    client: &Client,
    node: &str,
    volumes: Vec<Value>,
    cleanups: Vec<Value>,
) -> anyhow::Result<()> {
    let agent = PatchParams::apply(volpool_api::FIELD_MANAGER_AGENT).force();
    let reports: Api<NodeVolumes> = Api::all(client.clone());
    let node_object = Api::<Node>::all(client.clone()).get(node).await?;
    let owner = node_object
        .controller_owner_ref(&())
        .context("node has no uid")?;
    let object = json!({"apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes",
                        "metadata": {"name": node, "ownerReferences": [owner]}, "spec": {}});
    reports.patch(node, &agent, &Patch::Apply(&object)).await?;
    let mut status =
        json!({"nodeUID": node_object.metadata.uid, "agentVersion": "e2e", "volumes": volumes});
    if !cleanups.is_empty() {
        status["cleanups"] = json!(cleanups);
    }
    let status =
        json!({"apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes", "status": status});
    reports
        .patch_status(node, &agent, &Patch::Apply(&status))
        .await?;
    Ok(())
}

/// A local pool of the test, reading `/mnt/disks`, with PVs of class `class`.
pub async fn create_pool(
    client: &Client,
    test: &str,
    pool: &str,
    class: &str,
    extra: Value,
) -> anyhow::Result<()> {
    let mut spec = json!({"storageClassName": class, "local": {"discoveryDir": "/mnt/disks"}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    apply_pool(client, test, pool, spec).await
}

/// Server-side apply VolumePool `name` with `spec`, labelled as test `test`'s (so only that
/// test's controller plans it).
pub async fn apply_pool(
    client: &Client,
    test: &str,
    name: &str,
    spec: Value,
) -> anyhow::Result<()> {
    let object = json!({"apiVersion": "volpool.io/v1alpha1", "kind": "VolumePool",
                        "metadata": {"name": name, "labels": {LABEL_TEST: test}}, "spec": spec});
    Api::<VolumePool>::all(client.clone())
        .patch(name, &apply(), &Patch::Apply(&object))
        .await
        .with_context(|| format!("failed to apply VolumePool {name}"))?;
    Ok(())
}

/// A StorageClass without a provisioner (local PVs), Immediate or WaitForFirstConsumer.
pub async fn create_class(
    client: &Client,
    name: &str,
    wait_for_consumer: bool,
) -> anyhow::Result<()> {
    let mode = if wait_for_consumer {
        "WaitForFirstConsumer"
    } else {
        "Immediate"
    };
    let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                    "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": mode});
    Api::<k8s_openapi::api::storage::v1::StorageClass>::all(client.clone())
        .patch(name, &apply(), &Patch::Apply(&sc))
        .await?;
    Ok(())
}

/// A namespace.
pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}}))?,
        )
        .await?;
    Ok(())
}

/// A client with the CRDs applied, and the test's StorageClass (see [`create_class`]) and
/// namespace, both named `test`.
pub async fn class_and_namespace(test: &str, wait_for_consumer: bool) -> anyhow::Result<Client> {
    let client = crate::client().await?;
    crate::apply_crds(&client).await?;
    create_class(&client, test, wait_for_consumer).await?;
    create_namespace(&client, test).await?;
    Ok(client)
}

/// The PVs of a pool.
pub async fn pvs_of(client: &Client, pool: &str) -> anyhow::Result<Vec<PersistentVolume>> {
    let lp = ListParams::default().labels(&format!("{LABEL_POOL}={pool}"));
    Ok(Api::<PersistentVolume>::all(client.clone())
        .list(&lp)
        .await?
        .items)
}

/// Wait until the pool has exactly `names` as PVs.
pub async fn wait_for_pvs(
    client: &Client,
    pool: &str,
    names: &[String],
) -> anyhow::Result<Vec<PersistentVolume>> {
    let want: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    wait_for(&format!("PVs {want:?} of pool {pool}"), LONG, || async {
        let pvs = pvs_of(client, pool).await?;
        let have: BTreeSet<&str> = pvs
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        Ok((have == want).then_some(pvs.clone()))
    })
    .await
}

/// A PV's phase.
pub fn phase(pv: &PersistentVolume) -> Option<&str> {
    pv.status.as_ref()?.phase.as_deref()
}

/// The claim a PV is bound (or pre-bound) to.
pub fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref()?.claim_ref.as_ref()
}

/// A PV's label.
pub fn label<'a>(pv: &'a PersistentVolume, key: &str) -> Option<&'a str> {
    pv.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// A PV's capacity in bytes.
pub fn capacity(pv: &PersistentVolume) -> u64 {
    let text = pv
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .map(|c| c["storage"].0.clone())
        .unwrap_or_default();
    volpool_api::units::parse_bytes(&text).unwrap_or_default()
}

/// Wait until the PV `name` exists and passes `check`.
pub async fn wait_for_pv(
    client: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&PersistentVolume) -> bool,
) -> anyhow::Result<PersistentVolume> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    wait_for(&format!("PV {name}: {what}"), LONG, || async {
        Ok(api.get_opt(name).await?.filter(|pv| check(pv)))
    })
    .await
}

/// A claim in `ns` pre-bound to the PV `pv` (asking 1 GiB); returns when the PV is Bound.
pub async fn bind(
    client: &Client,
    ns: &str,
    claim: &str,
    pv: &str,
    class: &str,
) -> anyhow::Result<()> {
    create_claim(client, ns, claim, class, "ReadWriteOnce", "1Gi", Some(pv)).await?;
    wait_for_pv(client, pv, "Bound", |p| phase(p) == Some("Bound")).await?;
    Ok(())
}

/// A claim `name` in `ns` of `class`, asking for `size` with access mode `mode`; pre-bound to
/// the PV `volume` when one is given, else the PV binder picks its PV.
pub async fn create_claim(
    client: &Client,
    ns: &str,
    name: &str,
    class: &str,
    mode: &str,
    size: &str,
    volume: Option<&str>,
) -> anyhow::Result<()> {
    let mut pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                         "spec": {"storageClassName": class, "accessModes": [mode],
                                  "resources": {"requests": {"storage": size}}}});
    if let Some(pv) = volume {
        pvc["spec"]["volumeName"] = pv.into();
    }
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &serde_json::from_value(pvc)?)
        .await?;
    Ok(())
}

/// Wait for an Event from the controller with `reason` about the object `regarding` (a PV's
/// Events are in kube-system, a claim's in its namespace); returns its note.
pub async fn wait_for_event(
    client: &Client,
    namespace: &str,
    regarding: &str,
    reason: &str,
) -> anyhow::Result<String> {
    wait_for(
        &format!("Event {reason} about {regarding}"),
        LONG,
        || async {
            let found = events_about(client, namespace, regarding, reason)
                .await?
                .into_iter()
                .find(|e| {
                    e.reporting_controller.as_deref() == Some("volpool.io/volpool-controller")
                });
            Ok(found.map(|e| e.note.unwrap_or_default()))
        },
    )
    .await
}

/// The Events (events.k8s.io) with `reason` about the object named `regarding`, in
/// `namespace`.
pub async fn events_about(
    client: &Client,
    namespace: &str,
    regarding: &str,
    reason: &str,
) -> anyhow::Result<Vec<Event>> {
    let lp = ListParams::default().fields(&format!("regarding.name={regarding}"));
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect())
}

/// Run a StatefulSet `es` of 3 replicas in `ns`, with a claim of `size` of class `class` each
/// and required hostname anti-affinity, and wait until the scheduler has placed its 3 pods on 3
/// different nodes and the 3 claims are Bound. Returns `(node of the pod, PV of its claim)`.
pub async fn spread_statefulset(
    client: &Client,
    ns: &str,
    class: &str,
    size: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "es"},
        "spec": {
            "serviceName": "es", "replicas": 3, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "es"}},
            "template": {
                "metadata": {"labels": {"app": "es"}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "es"}}, "topologyKey": "kubernetes.io/hostname"}]}},
                    "containers": [{"name": "es", "image": "example.invalid/es:1",
                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "storageClassName": class, "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}}}}],
        },
    });
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .patch("es", &apply(), &Patch::Apply(&sts))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let placed = wait_for(
        "3 pods placed and 3 claims Bound",
        Duration::from_secs(180),
        || async {
            let mut placed = Vec::new();
            for i in 0..3 {
                let Some(node) = pods
                    .get_opt(&format!("es-{i}"))
                    .await?
                    .and_then(|p| p.spec?.node_name)
                else {
                    return Ok(None);
                };
                let Some(claim) = claims.get_opt(&format!("data-es-{i}")).await? else {
                    return Ok(None);
                };
                if claim.status.and_then(|s| s.phase).as_deref() != Some("Bound") {
                    return Ok(None);
                }
                placed.push((
                    node,
                    claim.spec.and_then(|s| s.volume_name).unwrap_or_default(),
                ));
            }
            Ok(Some(placed))
        },
    )
    .await?;
    let distinct: BTreeSet<&str> = placed.iter().map(|(n, _)| n.as_str()).collect();
    anyhow::ensure!(distinct.len() == 3, "one pod per node: {placed:?}");
    Ok(placed)
}
