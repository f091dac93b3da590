//! `deploy/` against the real v1.20.2 apiserver and its RBAC authorizer: the base installs
//! (server dry run), the ServiceAccounts get exactly the permissions the design needs, and the
//! optional monitoring kustomization carries the same alert rules as the plain rule file.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};
use volpool_e2e::deploy::{
    AGENT, CONTROLLER, NAMESPACE, apply_rbac, kubectl, kubectl_ok, service_account_kubeconfig,
    service_account_token,
};
use volpool_e2e::{apply_crds, client, repo_root, unique};

/// API versions served by both Kubernetes 1.20 and current releases.
const PORTABLE_API_VERSIONS: &[&str] = &[
    "v1",
    "apps/v1",
    "rbac.authorization.k8s.io/v1",
    "apiextensions.k8s.io/v1",
    "coordination.k8s.io/v1",
    "events.k8s.io/v1",
    "storage.k8s.io/v1",
];

/// The objects `kubectl kustomize <dir>` renders.
fn render(dir: &str) -> anyhow::Result<Vec<Value>> {
    let text = kubectl_ok(&["kustomize", dir])?;
    let mut objects = Vec::new();
    // NB: kustomize separates its documents with a bare `---` line.
    for document in text.split("\n---\n") {
        let value: Value = serde_yaml::from_str(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} is not in the rendered manifests"))
}

#[tokio::test]
async fn base_installs_on_a_1_20_apiserver() -> anyhow::Result<()> {
    // NB: a server dry run of namespaced objects needs their Namespace to exist for real.
    apply_rbac()?;
    dry_run_applies(
        "deploy/",
        &[
            "customresourcedefinition.apiextensions.k8s.io/volumepools.volpool.io",
            "customresourcedefinition.apiextensions.k8s.io/nodevolumes.volpool.io",
            "daemonset.apps/volpool-agent",
            "deployment.apps/volpool-controller",
            "service/volpool-agent",
            "service/volpool-controller",
            "clusterrolebinding.rbac.authorization.k8s.io/volpool-agent",
            "rolebinding.rbac.authorization.k8s.io/volpool-controller-leader",
        ],
    )
}

/// `kubectl apply -k <dir> --dry-run=server` succeeds and names every one of `objects`.
fn dry_run_applies(dir: &str, objects: &[&str]) -> anyhow::Result<()> {
    let output = kubectl_ok(&["apply", "-k", dir, "--dry-run=server"])?;
    for object in objects {
        assert!(
            output.contains(object),
            "{object} missing from the dry run of {dir}:\n{output}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn base_uses_only_api_versions_of_1_20_and_current_kubernetes() -> anyhow::Result<()> {
    let objects = render("deploy/")?;
    for object in &objects {
        let version = object["apiVersion"].as_str().unwrap_or_default();
        assert!(
            PORTABLE_API_VERSIONS.contains(&version),
            "{} {} uses {version}",
            object["kind"],
            object["metadata"]["name"]
        );
    }
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(
        !kinds.contains("PodMonitor") && !kinds.contains("PrometheusRule"),
        "the base must install on a cluster without the Prometheus operator"
    );
    Ok(())
}

#[tokio::test]
async fn agent_daemonset_sees_the_host_on_every_node() -> anyhow::Result<()> {
    let objects = render("deploy/")?;
    let spec = &find(&objects, "DaemonSet", AGENT)["spec"]["template"]["spec"];
    assert_eq!(spec["serviceAccountName"], AGENT);
    assert_eq!(spec["hostPID"], true);
    assert_eq!(spec["hostNetwork"], true);
    assert!(
        spec["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "the agent must tolerate every taint: {}",
        spec["tolerations"]
    );
    let host_volume = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["hostPath"]["path"] == "/")
        .expect("the host root is a volume");
    let container = &spec["containers"][0];
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == host_volume["name"])
        .expect("the host root is mounted");
    assert_eq!(mount["mountPath"], "/host");
    assert_eq!(mount["mountPropagation"], "HostToContainer");
    assert!(
        container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a == "--host-root=/host")
    );
    let env = container["env"].as_array().cloned().unwrap_or_default();
    assert!(env.contains(&json!({"name": "NODE_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})));
    // NB: the agent accepts only "true" or "false"; installing packages is opt-in.
    assert!(
        env.contains(&json!({"name": "INSTALL_NFS_CLIENT", "value": "false"})),
        "INSTALL_NFS_CLIENT is in the DaemonSet, off by default: {env:?}"
    );
    assert_eq!(container["ports"][0]["containerPort"], 9810);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["requests"].is_object());
    Ok(())
}

#[tokio::test]
async fn controller_runs_two_unprivileged_replicas() -> anyhow::Result<()> {
    let objects = render("deploy/")?;
    let deployment = find(&objects, "Deployment", CONTROLLER);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(spec["serviceAccountName"], CONTROLLER);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert!(spec.get("hostPID").is_none() && spec.get("hostNetwork").is_none());
    let container = &spec["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert!(container["securityContext"].get("privileged").is_none());
    let env = container["env"].as_array().cloned().unwrap_or_default();
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        assert!(
            env.contains(&json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})),
            "{name} from the downward API"
        );
    }
    assert_eq!(container["ports"][0]["containerPort"], 9811);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    Ok(())
}

#[tokio::test]
async fn examples_are_accepted_by_the_crds() -> anyhow::Result<()> {
    apply_crds(&client().await?).await?;
    dry_run_applies(
        "deploy/examples/",
        &[
            "volumepool.volpool.io/fast-disks",
            "volumepool.volpool.io/nfs-shared",
            "storageclass.storage.k8s.io/fast-disks",
            "storageclass.storage.k8s.io/nfs-shared",
        ],
    )
}

/// What `kubectl auth can-i` answers, as `who` (impersonated) or with `token`.
fn can_i(who: Who, verb: &str, resource: &str, namespace: Option<&str>) -> anyhow::Result<bool> {
    let (resource, subresource) = match resource.split_once(" status") {
        Some((r, _)) => (r, Some("--subresource=status")),
        None => (resource, None),
    };
    let as_flag;
    let token_flag;
    let mut args: Vec<&str> = Vec::new();
    match who {
        Who::Impersonated(account) => {
            as_flag = format!("--as=system:serviceaccount:{NAMESPACE}:{account}");
            args.push(&as_flag);
        }
        Who::Token(token) => {
            token_flag = format!("--token={token}");
            args.push(&token_flag);
        }
    }
    args.extend(["auth", "can-i", verb, resource]);
    args.extend(subresource);
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let output = kubectl(&args)?;
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_string();
    match answer.as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => anyhow::bail!(
            "kubectl auth can-i {verb} {resource}: {answer} {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[derive(Clone, Copy)]
enum Who<'a> {
    Impersonated(&'a str),
    Token(&'a str),
}

/// (verb, resource[ status], namespace, allowed). `None` namespace = in every namespace.
type Expectation = (&'static str, &'static str, Option<&'static str>, bool);

const AGENT_EXPECTATIONS: &[Expectation] = &[
    ("get", "persistentvolumes", None, true),
    ("list", "persistentvolumes", None, false),
    ("watch", "persistentvolumes", None, false),
    ("create", "persistentvolumes", None, false),
    ("delete", "persistentvolumes", None, false),
    ("update", "persistentvolumes", None, false),
    ("patch", "persistentvolumes", None, false),
    ("delete", "nodes", None, false),
    ("update", "nodes", None, false),
    ("patch", "nodes", None, true),
    ("get", "nodes", None, true),
    ("list", "volumepools.volpool.io", None, true),
    ("patch", "volumepools.volpool.io", None, false),
    ("patch", "volumepools.volpool.io status", None, false),
    ("create", "nodevolumes.volpool.io", None, true),
    ("patch", "nodevolumes.volpool.io", None, true),
    ("watch", "nodevolumes.volpool.io", None, true),
    ("patch", "nodevolumes.volpool.io status", None, true),
    ("delete", "nodevolumes.volpool.io", None, false),
    ("list", "pods", None, true),
    ("create", "pods", None, false),
    ("delete", "pods", None, false),
    ("get", "secrets", Some(NAMESPACE), false),
    ("list", "secrets", None, false),
    (
        "create",
        "leases.coordination.k8s.io",
        Some(NAMESPACE),
        false,
    ),
    ("create", "events.events.k8s.io", Some("kube-system"), true),
    ("create", "events", Some("default"), true),
    ("delete", "events", Some("default"), false),
];

const CONTROLLER_EXPECTATIONS: &[Expectation] = &[
    ("create", "persistentvolumes", None, true),
    ("patch", "persistentvolumes", None, true),
    ("delete", "persistentvolumes", None, true),
    ("list", "persistentvolumeclaims", None, true),
    ("delete", "persistentvolumeclaims", None, false),
    ("list", "storageclasses.storage.k8s.io", None, true),
    ("create", "storageclasses.storage.k8s.io", None, false),
    ("list", "nodes", None, true),
    ("delete", "nodes", None, false),
    ("patch", "nodes", None, false),
    ("list", "volumepools.volpool.io", None, true),
    ("patch", "volumepools.volpool.io", None, false),
    ("patch", "volumepools.volpool.io status", None, true),
    ("list", "nodevolumes.volpool.io", None, true),
    ("patch", "nodevolumes.volpool.io", None, true),
    ("patch", "nodevolumes.volpool.io status", None, false),
    ("delete", "nodevolumes.volpool.io", None, false),
    (
        "create",
        "leases.coordination.k8s.io",
        Some(NAMESPACE),
        true,
    ),
    (
        "update",
        "leases.coordination.k8s.io/volpool-controller",
        Some(NAMESPACE),
        true,
    ),
    (
        "update",
        "leases.coordination.k8s.io/kube-scheduler",
        Some("kube-system"),
        false,
    ),
    ("get", "leases.coordination.k8s.io", Some("default"), false),
    (
        "create",
        "leases.coordination.k8s.io",
        Some("kube-system"),
        false,
    ),
    ("get", "secrets", Some(NAMESPACE), false),
    // NB: Pending pods are read to explain claims of WaitForFirstConsumer classes; pods are
    // never changed.
    ("list", "pods", None, true),
    ("delete", "pods", None, false),
    ("patch", "pods", None, false),
    ("create", "events.events.k8s.io", Some("kube-system"), true),
    ("create", "events", Some("default"), true),
];

fn check(who: Who, label: &str, expectations: &[Expectation]) -> anyhow::Result<()> {
    let mut wrong = Vec::new();
    for &(verb, resource, namespace, allowed) in expectations {
        if can_i(who, verb, resource, namespace)? != allowed {
            let ns = namespace.unwrap_or("all namespaces");
            wrong.push(format!(
                "{label} {} {verb} {resource} in {ns}",
                if allowed { "cannot" } else { "can" }
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "RBAC is not as designed:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn agent_has_least_privilege() -> anyhow::Result<()> {
    apply_rbac()?;
    check(Who::Impersonated(AGENT), "the agent", AGENT_EXPECTATIONS)?;
    let token = service_account_token(AGENT).await?;
    check(Who::Token(&token), "the agent's token", AGENT_EXPECTATIONS)
}

#[tokio::test]
async fn controller_has_least_privilege() -> anyhow::Result<()> {
    apply_rbac()?;
    check(
        Who::Impersonated(CONTROLLER),
        "the controller",
        CONTROLLER_EXPECTATIONS,
    )?;
    let token = service_account_token(CONTROLLER).await?;
    check(
        Who::Token(&token),
        "the controller's token",
        CONTROLLER_EXPECTATIONS,
    )
}

async fn client_from(path: &std::path::Path) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn local_pv(name: &str) -> anyhow::Result<PersistentVolume> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "e2e-rbac",
            "local": {"path": "/mnt/disks/vol1"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["e2e"]}]}]}},
        },
    }))?)
}

#[tokio::test]
async fn service_account_kubeconfigs_act_as_their_accounts() -> anyhow::Result<()> {
    apply_crds(&client().await?).await?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let name = unique("e2e-rbac");

    let agent = client_from(&service_account_kubeconfig(AGENT).await?).await?;
    let pools: Api<volpool_api::VolumePool> = Api::all(agent.clone());
    pools.list(&Default::default()).await?;
    let refused = Api::<PersistentVolume>::all(agent)
        .create(&dry_run, &local_pv(&name)?)
        .await
        .expect_err("the agent must not create PersistentVolumes");
    assert!(
        matches!(&refused, kube::Error::Api(status) if status.code == 403),
        "expected Forbidden, got {refused}"
    );

    let controller = client_from(&service_account_kubeconfig(CONTROLLER).await?).await?;
    Api::<PersistentVolume>::all(controller)
        .create(&dry_run, &local_pv(&name)?)
        .await?;
    Ok(())
}

#[test]
fn monitoring_scrapes_with_a_node_label_and_alerts_like_the_rule_file() -> anyhow::Result<()> {
    let objects = render("deploy/monitoring/")?;
    let monitor = find(&objects, "PodMonitor", "volpool");
    let relabelings = &monitor["spec"]["podMetricsEndpoints"][0]["relabelings"];
    assert!(
        relabelings
            .as_array()
            .into_iter()
            .flatten()
            .any(
                |r| r["sourceLabels"] == json!(["__meta_kubernetes_pod_node_name"])
                    && r["targetLabel"] == "node"
            ),
        "the PodMonitor must relabel the pod's node into `node`: {relabelings}"
    );
    let rule = objects
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let file = std::fs::read_to_string(repo_root().join("deploy/monitoring/rules.yaml"))?;
    let file: Value = serde_yaml::from_str(&file)?;
    assert!(
        rule["spec"]["groups"] == file["groups"],
        "deploy/monitoring/prometheus-rule.yaml differs from rules.yaml: run deploy/monitoring/generate"
    );
    Ok(())
}

/// Series of other exporters the rules join with: kube-state-metrics, and Prometheus's `up`.
const OTHER_METRICS: &[&str] = &[
    "kube_persistentvolumeclaim_info",
    "kube_persistentvolumeclaim_status_phase",
    "kube_daemonset_status_desired_number_scheduled",
    "kube_daemonset_status_number_available",
    "up",
];

#[test]
fn alert_rules_say_what_to_do_and_query_known_metrics() -> anyhow::Result<()> {
    let documented = volpool_e2e::deploy::DocumentedMetrics::of_file("README.md")?;
    let text = std::fs::read_to_string(repo_root().join("deploy/monitoring/rules.yaml"))?;
    let file: Value = serde_yaml::from_str(&text)?;
    let mut alerts = BTreeSet::new();
    for rule in file["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
    {
        let name = rule["alert"].as_str().expect("only alerting rules");
        assert!(alerts.insert(name.to_string()), "{name} defined twice");
        assert!(
            ["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name}: severity"
        );
        let description = rule["annotations"]["description"].as_str().unwrap_or("");
        assert!(
            rule["annotations"]["summary"].is_string() && description.contains("What to do:"),
            "{name}: a summary and a description that says what to do"
        );
        let expr = rule["expr"].as_str().unwrap_or_default();
        for selector in volpool_e2e::deploy::promql_selectors(expr) {
            let metric = selector.metric.as_str();
            assert!(
                documented.contains(metric) || OTHER_METRICS.contains(&metric),
                "{name} queries {metric}, which neither the README's metrics table nor \
                 OTHER_METRICS lists"
            );
        }
    }
    for alert in [
        "VolpoolPoolExhausted",
        "VolpoolPoolBelowMinAvailable",
        "VolpoolVolumeUnhealthy",
        "VolpoolVolumeProbeStuck",
        "VolpoolScrubStuck",
        "VolpoolVolumeFillingUp",
        "VolpoolNFSClientMissing",
        "VolpoolWorkloadRequirementNotMet",
        "VolpoolAgentDown",
        "VolpoolControllerNoLeader",
    ] {
        assert!(alerts.contains(alert), "issue 8 asks for {alert}");
    }
    Ok(())
}

#[tokio::test]
async fn controller_and_agent_reports_work_with_only_the_deploy_rbac() -> anyhow::Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{DeleteParams, Patch, PatchParams};
    use volpool_e2e::controller::{
        Controller, LONG, create_class, create_pool, publish_report, pvs_of, volume,
    };

    let admin = client().await?;
    apply_crds(&admin).await?;
    let test = unique("e2e-rbac");
    let node = format!("{test}-n1");
    volpool_e2e::create_node(&admin, &node).await?;
    create_class(&admin, &test, false).await?;
    create_pool(&admin, &test, &test, &test, json!({})).await?;

    // The agent's writes, with the agent's token: its report and its node's label.
    let agent = client_from(&service_account_kubeconfig(AGENT).await?).await?;
    let disk = volume(&test, "vol1", &format!("uuid:{test}"), 10 << 30);
    publish_report(&agent, &node, vec![disk], vec![]).await?;
    Api::<Node>::all(agent)
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"volpool.io/nfs-client": "ready"}}})),
        )
        .await?;

    // The controller, with the controller's token and its Lease in volpool-system.
    let controller = Controller::start(&test, &test).await?;

    let leases: Api<Lease> = Api::namespaced(admin.clone(), NAMESPACE);
    volpool_e2e::wait_for("the controller to take its Lease", LONG, || async {
        let lease = leases.get_opt(&test).await?;
        let holder = lease.and_then(|l| l.spec?.holder_identity);
        Ok((holder.as_deref() == Some(test.as_str())).then_some(()))
    })
    .await?;
    // NB: the PV's phase is the apiserver's PV controller's business (slow when the shared
    // cluster is busy); that the controller could create it is what RBAC decides.
    let pv = volpool_e2e::wait_for("the reported disk to become a PV", LONG, || async {
        Ok(pvs_of(&admin, &test).await?.into_iter().next())
    })
    .await
    .map_err(|e| e.context(controller.log_tail(usize::MAX)))?;
    assert_eq!(
        pv.spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some(test.as_str())
    );
    let pools: Api<volpool_api::VolumePool> = Api::all(admin.clone());
    volpool_e2e::wait_for("the pool status to count it", LONG, || async {
        let pool = pools.get(&test).await?;
        Ok(pool.status.filter(|s| s.volumes.available == 1).map(|_| ()))
    })
    .await?;

    drop(controller);
    let pv_name = pv.metadata.name.unwrap_or_default();
    Api::<PersistentVolume>::all(admin.clone())
        .delete(&pv_name, &DeleteParams::default())
        .await?;
    pools.delete(&test, &DeleteParams::default()).await?;
    leases.delete(&test, &DeleteParams::default()).await?;
    Api::<Node>::all(admin.clone())
        .delete(&node, &DeleteParams::default())
        .await?;
    Api::<k8s_openapi::api::storage::v1::StorageClass>::all(admin)
        .delete(&test, &DeleteParams::default())
        .await?;
    Ok(())
}
