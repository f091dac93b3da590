//! The Helm chart `charts/volpool/` with the real Helm v4 engine (PyPI helm-python-sdk, driven
//! by `tests/helm/helm`) and, for installs, the real v1.20.2 apiserver.
//!
//! ```text
//!  charts/volpool ──tests/helm/helm template──► objects ══ kubectl kustomize deploy/ (one truth)
//!                 ──tests/helm/helm install/upgrade/rollback/uninstall──► kube-apiserver v1.20.2
//! ```
//!
//! Each live test installs its own release (`<release>-volpool-*` names) into its own
//! namespace, so they run beside the other e2e tests, which use `deploy/`'s fixed names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use volpool_e2e::deploy::{kubectl, kubectl_ok, kubectl_path};
use volpool_e2e::{kubeconfig, repo_root, unique, wait_for};
use volpool_testkit::{TempDir, run, stdout_of};

const CHART: &str = "charts/volpool";
/// The labels Helm's conventions add: the only difference allowed between the chart's default
/// render and `deploy/`.
const HELM_LABELS: &[&str] = &[
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

/// Run `tests/helm/helm` from the repository root, after `tests/setup-helm` (once per process,
/// under a lock: it installs the engine when the test cache lacks it).
fn helm(args: &[&str]) -> anyhow::Result<Output> {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            let output = Command::new("flock")
                .arg(std::env::temp_dir().join("volpool-setup-helm.lock"))
                .arg(repo_root().join("tests/setup-helm"))
                .output()
                .map_err(|e| format!("failed to run tests/setup-helm: {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "tests/setup-helm failed:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                ))
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)?;
    Command::new(repo_root().join("tests/helm/helm"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .context("failed to run tests/helm/helm")
}

/// Like [`helm`], but fail unless it exits 0; returns its stdout.
fn helm_ok(args: &[&str]) -> anyhow::Result<String> {
    stdout_of(&helm(args)?, &format!("helm {}", args.join(" ")))
}

/// Like [`helm_ok`], against the test cluster.
fn helm_live(args: &[&str]) -> anyhow::Result<String> {
    let path = kubeconfig()?;
    let path = path.to_str().context("kubeconfig path is not UTF-8")?;
    helm_ok(&[&["--kubeconfig", path], args].concat())
}

/// The objects of a YAML stream (documents separated by `---` lines).
fn parse_stream(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    let mut document = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line == "---" {
            let value: Value = serde_yaml::from_str(&document)
                .with_context(|| format!("bad YAML document:\n{document}"))?;
            if !value.is_null() {
                objects.push(value);
            }
            document.clear();
        } else {
            document.push_str(line);
            document.push('\n');
        }
    }
    Ok(objects)
}

/// The chart rendered offline, CRDs included, as release `name` in `namespace`.
fn render(name: &str, namespace: &str, extra: &[&str]) -> anyhow::Result<Vec<Value>> {
    let args = [
        &["template", name, CHART, "-n", namespace, "--include-crds"],
        extra,
    ]
    .concat();
    parse_stream(&helm_ok(&args)?)
}

/// `kubectl kustomize <dir>` with the kubectl that matches the test server (no cluster needed).
fn kustomize(dir: &str) -> anyhow::Result<Vec<Value>> {
    let output = Command::new(kubectl_path())
        .args(["kustomize", dir])
        .current_dir(repo_root())
        .output()
        .context("failed to run kubectl kustomize")?;
    ensure!(
        output.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_stream(&String::from_utf8(output.stdout)?)
}

fn key(object: &Value) -> (String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (text(&object["kind"]), text(&object["metadata"]["name"]))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| key(o) == (kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("{kind}/{name} is not in the rendered objects"))
}

/// Numbers as floats: kustomize writes the CRDs' `minimum: 1.0` as `1`.
fn numbers_as_floats(value: &mut Value) {
    match value {
        Value::Number(number) => *value = json!(number.as_f64()),
        Value::Array(items) => items.iter_mut().for_each(numbers_as_floats),
        Value::Object(fields) => fields.values_mut().for_each(numbers_as_floats),
        _ => {}
    }
}

/// The object without Helm's own labels (on the object and on its pod template), to compare.
fn without_helm_labels(mut object: Value) -> Value {
    numbers_as_floats(&mut object);
    for pointer in ["/metadata/labels", "/spec/template/metadata/labels"] {
        if let Some(labels) = object.pointer_mut(pointer).and_then(Value::as_object_mut) {
            for label in HELM_LABELS {
                labels.remove(*label);
            }
        }
    }
    object
}

/// Assert that `chart` holds exactly the objects of `deploy` but for Helm's labels; `skip`
/// lists the (kind, name) of `deploy` that the chart leaves to Helm itself.
fn assert_same_objects(chart: Vec<Value>, deploy: Vec<Value>, skip: &[(&str, &str)]) {
    let index = |objects: Vec<Value>| -> BTreeMap<(String, String), Value> {
        objects
            .into_iter()
            .map(|o| (key(&o), without_helm_labels(o)))
            .filter(|(k, _)| !skip.contains(&(k.0.as_str(), k.1.as_str())))
            .collect()
    };
    let (chart, deploy) = (index(chart), index(deploy));
    let names = |m: &BTreeMap<(String, String), Value>| m.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(names(&chart), names(&deploy), "kinds and names differ");
    for (key, expected) in &deploy {
        let actual = &chart[key];
        assert!(
            actual == expected,
            "{}/{} differs from deploy/:\nchart:\n{}\ndeploy/:\n{}",
            key.0,
            key.1,
            serde_yaml::to_string(actual).unwrap_or_default(),
            serde_yaml::to_string(expected).unwrap_or_default()
        );
    }
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo_root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn files(dir: &str, extension: &str) -> BTreeSet<String> {
    std::fs::read_dir(repo_root().join(dir))
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(extension))
        .collect()
}

#[test]
fn chart_versions_are_the_crates_version() {
    // NB: this crate's version is the workspace's, like every crate's.
    let chart: Value =
        serde_yaml::from_str(&read("charts/volpool/Chart.yaml")).expect("Chart.yaml");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"), "appVersion");
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"), "version");
}

#[test]
fn chart_copies_of_crds_rules_and_dashboards_are_current() {
    let stale = "stale: run charts/sync";
    for (source, copy, extension) in [
        ("deploy/crds", "charts/volpool/crds", ".volpool.io.yaml"),
        ("dashboards", "charts/volpool/dashboards", ".json"),
    ] {
        assert_eq!(
            files(source, extension),
            files(copy, extension),
            "{copy} {stale}"
        );
        for name in files(source, extension) {
            let same = read(format!("{source}/{name}")) == read(format!("{copy}/{name}"));
            assert!(same, "{copy}/{name} {stale}");
        }
    }
    let rules = read("deploy/monitoring/rules.yaml") == read("charts/volpool/files/rules.yaml");
    assert!(rules, "charts/volpool/files/rules.yaml {stale}");
}

#[test]
fn lint_passes_with_default_values_and_with_every_value_set() -> anyhow::Result<()> {
    for args in [
        vec!["lint", CHART, "--strict"],
        vec![
            "lint",
            CHART,
            "--strict",
            "-f",
            "tests/helm/every-value.yaml",
        ],
    ] {
        let output = helm_ok(&args)?;
        assert!(output.contains("no failures"), "{output}");
    }
    Ok(())
}

#[test]
fn default_render_is_deploy() -> anyhow::Result<()> {
    let chart = render("volpool", "volpool-system", &[])?;
    // NB: the Namespace is Helm's to create (`--create-namespace`), not the chart's.
    assert_same_objects(
        chart,
        kustomize("deploy/")?,
        &[("Namespace", "volpool-system")],
    );
    let monitoring = render(
        "volpool",
        "volpool-system",
        &[
            "--set",
            "monitoring.podMonitor.enabled=true,monitoring.prometheusRule.enabled=true",
        ],
    )?;
    let monitoring = monitoring
        .into_iter()
        .filter(|o| o["apiVersion"] == "monitoring.coreos.com/v1")
        .collect();
    assert_same_objects(monitoring, kustomize("deploy/monitoring/")?, &[]);
    Ok(())
}

/// Dotted paths of every value the schema knows (`pools[].nfs.server` for list items).
fn schema_paths(node: &Value, prefix: &str, out: &mut Vec<String>) {
    for (key, child) in node["properties"].as_object().into_iter().flatten() {
        let path = format!("{prefix}{key}");
        if child.get("properties").is_some() {
            schema_paths(child, &format!("{path}."), out);
            continue;
        }
        out.push(path.clone());
        if child["items"].get("properties").is_some() {
            schema_paths(&child["items"], &format!("{path}[]."), out);
        }
    }
}

/// Whether `values` sets `path` (a list item path is set when any item sets it).
fn sets(values: &Value, path: &str) -> bool {
    match path.split_once('.') {
        Some((head, rest)) => match head.strip_suffix("[]") {
            Some(list) => values[list]
                .as_array()
                .is_some_and(|items| items.iter().any(|item| sets(item, rest))),
            None => sets(&values[head], rest),
        },
        None => values.get(path).is_some(),
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

fn env<'a>(workload: &'a Value, name: &str) -> &'a Value {
    container(workload)["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == name))
        .map(|e| &e["value"])
        .unwrap_or(&Value::Null)
}

#[test]
fn every_value_shows_in_the_rendered_objects() -> anyhow::Result<()> {
    let values: Value = serde_yaml::from_str(&read("tests/helm/every-value.yaml"))?;
    let schema: Value = serde_json::from_str(&read("charts/volpool/values.schema.json"))?;
    let mut paths = Vec::new();
    schema_paths(&schema, "", &mut paths);
    let unset: Vec<_> = paths.iter().filter(|p| !sets(&values, p)).collect();
    assert!(unset.is_empty(), "every-value.yaml leaves {unset:?} unset");

    let objects = render("every", "every-ns", &["-f", "tests/helm/every-value.yaml"])?;
    let secrets = json!([{"name": "regcred"}, {"name": "mirror-cred"}]);
    for (kind, component, lead_args) in [
        ("DaemonSet", "agent", vec![json!("--host-root=/host")]),
        (
            "Deployment",
            "controller",
            vec![json!("--lease-duration=25s")],
        ),
    ] {
        let object = find(&objects, kind, &format!("vp-{component}"));
        let given = &values[component];
        let pod = &object["spec"]["template"]["spec"];
        let image = &given["image"];
        let reference = format!("{}:{}", text(&image["repository"]), text(&image["tag"]));
        assert_eq!(container(object)["image"], reference.as_str());
        assert_eq!(container(object)["imagePullPolicy"], image["pullPolicy"]);
        assert_eq!(pod["imagePullSecrets"], secrets, "{kind}");
        let args = [lead_args, items(&given["extraArgs"]).to_vec()].concat();
        assert_eq!(container(object)["args"], Value::Array(args), "{kind}");
        assert_eq!(env(object, "RUST_LOG"), &given["logLevel"], "{kind}");
        assert_eq!(container(object)["resources"], given["resources"], "{kind}");
        for field in [
            "nodeSelector",
            "tolerations",
            "affinity",
            "priorityClassName",
        ] {
            assert_eq!(pod[field], given[field], "{kind} {field}");
        }
    }
    let agent = find(&objects, "DaemonSet", "vp-agent");
    assert_eq!(env(agent, "INSTALL_NFS_CLIENT"), "true");
    assert_eq!(
        agent["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        2
    );
    let controller = find(&objects, "Deployment", "vp-controller");
    assert_eq!(controller["spec"]["replicas"], 3);
    let pod = &controller["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"], values["controller"]["extraVolumes"]);
    assert_eq!(
        container(controller)["volumeMounts"],
        values["controller"]["extraVolumeMounts"]
    );

    for pool in items(&values["pools"]) {
        let name = text(&pool["name"]);
        let class_name = pool["storageClassName"].as_str().unwrap_or(name);
        let rendered = find(&objects, "VolumePool", name);
        assert_eq!(rendered["spec"]["storageClassName"], class_name);
        for (field, value) in pool.as_object().into_iter().flatten() {
            if !["name", "storageClass", "storageClassName"].contains(&field.as_str()) {
                assert_eq!(&rendered["spec"][field], value, "pool {name} {field}");
            }
        }
        let class = find(&objects, "StorageClass", class_name);
        assert_eq!(class["provisioner"], "kubernetes.io/no-provisioner");
        let default =
            &class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"];
        assert_eq!(
            default == "true",
            pool["storageClass"]["isDefaultClass"] == true,
            "{name}"
        );
        assert_eq!(
            class["reclaimPolicy"],
            pool["reclaimPolicy"].as_str().unwrap_or("Delete")
        );
        // Local pools always wait for the pod's node; the NFS pool asked for it.
        assert_eq!(class["volumeBindingMode"], "WaitForFirstConsumer", "{name}");
    }

    let monitoring = &values["monitoring"];
    for (kind, given) in [
        ("PodMonitor", &monitoring["podMonitor"]),
        ("PrometheusRule", &monitoring["prometheusRule"]),
    ] {
        let labels = &find(&objects, kind, "vp")["metadata"]["labels"];
        for (label, value) in given["labels"].as_object().into_iter().flatten() {
            assert_eq!(&labels[label], value, "{kind} label {label}");
        }
    }
    let endpoint = &find(&objects, "PodMonitor", "vp")["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["interval"], monitoring["podMonitor"]["interval"]);
    let dashboards = &monitoring["dashboards"];
    for name in files("dashboards", ".json") {
        let map = find(
            &objects,
            "ConfigMap",
            &format!("vp-dashboard-{}", name.trim_end_matches(".json")),
        );
        assert_eq!(map["metadata"]["namespace"], dashboards["namespace"]);
        assert_eq!(
            map["metadata"]["labels"]["team"],
            dashboards["labels"]["team"]
        );
        assert_eq!(map["metadata"]["annotations"], dashboards["annotations"]);
    }
    Ok(())
}

fn keys(node: &Value) -> BTreeSet<String> {
    node["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn pool_values_have_every_field_of_the_volume_pool_crd() -> anyhow::Result<()> {
    let crd: Value = serde_yaml::from_str(&read("deploy/crds/volumepools.volpool.io.yaml"))?;
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let schema: Value = serde_json::from_str(&read("charts/volpool/values.schema.json"))?;
    let pool = &schema["properties"]["pools"]["items"];
    let mut expected = keys(spec);
    expected.extend(["name".to_string(), "storageClass".to_string()]);
    assert_eq!(
        keys(pool),
        expected,
        "pools[] fields differ from the CRD's spec"
    );
    for kind in ["local", "nfs"] {
        let (chart, crd) = (&pool["properties"][kind], &spec["properties"][kind]);
        assert_eq!(
            keys(chart),
            keys(crd),
            "pools[].{kind} fields differ from the CRD's"
        );
    }
    Ok(())
}

#[test]
fn values_breaking_the_schema_are_refused_naming_the_value() -> anyhow::Result<()> {
    let cases: &[(&str, &str)] = &[
        ("agent:\n  logLevel: loud\n", "/agent/logLevel"),
        ("controller:\n  replicas: two\n", "/controller/replicas"),
        (
            "controller:\n  leaderElection:\n    leaseDuration: 10\n",
            "/controller/leaderElection/leaseDuration",
        ),
        (
            "agent:\n  image:\n    pullPolicy: Sometimes\n",
            "/agent/image/pullPolicy",
        ),
        ("agent:\n  logLevl: debug\n", "logLevl"),
        ("installNfsClient: \"yes\"\n", "/installNfsClient"),
        (
            "monitoring:\n  dashboards:\n    enabled: 1\n",
            "/monitoring/dashboards/enabled",
        ),
        (
            "pools:\n- name: p\n  nfs: {server: s, path: /x, minAvailable: -1}\n",
            "/pools/0/nfs/minAvailable",
        ),
        (
            "pools:\n- name: p\n  local: {discoveryDir: relative}\n",
            "/pools/0/local/discoveryDir",
        ),
        (
            "pools:\n- name: Bad_Name\n  local: {discoveryDir: /mnt}\n",
            "/pools/0/name",
        ),
        (
            "pools:\n- name: p\n  local: {discoveryDir: /mnt}\n  nfs: {server: s, path: /x}\n",
            "/pools/0",
        ),
        ("pools:\n- name: p\n", "/pools/0"),
    ];
    let dir = TempDir::new("helm-bad-values")?;
    for (index, (values, named)) in cases.iter().enumerate() {
        let path = dir.join(format!("{index}.yaml"));
        std::fs::write(&path, values)?;
        let file = path.to_str().context("temp path is not UTF-8")?;
        // NB: lint validates the same way; once is enough to show it refuses too.
        let commands: &[&str] = if index == 0 {
            &["template", "lint"]
        } else {
            &["template"]
        };
        for &command in commands {
            let args: Vec<&str> = match command {
                "template" => vec!["template", "volpool", CHART, "-f", file],
                _ => vec!["lint", CHART, "-f", file],
            };
            let output = helm(&args)?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(!output.status.success(), "{command} accepted {values:?}");
            assert!(
                text.contains(named),
                "{command} of {values:?} does not name {named}:\n{text}"
            );
        }
    }
    Ok(())
}

/// Assert that each dashboard ConfigMap holds the JSON of `dashboards/<file>` and the label
/// Grafana's sidecar looks for.
fn assert_dashboards(config_maps: &[Value], prefix: &str) {
    let expected = files("dashboards", ".json");
    assert_eq!(
        config_maps.len(),
        expected.len(),
        "one ConfigMap per dashboard"
    );
    for file in expected {
        let name = format!("{prefix}-dashboard-{}", file.trim_end_matches(".json"));
        let map = config_maps
            .iter()
            .find(|m| m["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no ConfigMap {name}"));
        assert_eq!(
            map["metadata"]["labels"]["grafana_dashboard"], "1",
            "{name}"
        );
        let held = map["data"][&file]
            .as_str()
            .unwrap_or_else(|| panic!("{name} lacks {file}"));
        assert_eq!(
            held,
            read(format!("dashboards/{file}")),
            "{name} holds other JSON"
        );
    }
}

#[test]
fn dashboards_config_maps_hold_the_dashboards_json() -> anyhow::Result<()> {
    let objects = render(
        "volpool",
        "volpool-system",
        &["--set", "monitoring.dashboards.enabled=true"],
    )?;
    let maps: Vec<Value> = objects
        .into_iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .collect();
    assert_dashboards(&maps, "volpool");
    Ok(())
}

#[test]
fn readme_values_table_is_current() -> anyhow::Result<()> {
    let table = helm_ok(&["values-table", CHART])?;
    let readme = read("README.md");
    let (start, end) = (
        "<!-- values-table: start -->\n",
        "<!-- values-table: end -->",
    );
    let begin = readme
        .find(start)
        .context("README.md lacks the values table markers")?
        + start.len();
    let stop = readme[begin..]
        .find(end)
        .context("README.md lacks the end marker")?
        + begin;
    assert!(
        readme[begin..stop] == table,
        "the README's values table is stale: run tests/helm/helm values-table charts/volpool --write README.md"
    );
    Ok(())
}

/// A release of the chart in a namespace of its own; uninstalled and its namespace deleted on
/// drop, whatever the test did.
struct Release {
    name: String,
    namespace: String,
    values: PathBuf,
}

impl Release {
    fn new() -> Self {
        let name = unique("helm");
        let values = std::env::temp_dir().join(format!("{name}.values.yaml"));
        Self {
            namespace: format!("{name}-ns"),
            name,
            values,
        }
    }

    /// `<release>-volpool`, the prefix of the release's object names.
    fn prefix(&self) -> String {
        format!("{}-volpool", self.name)
    }

    /// Values files are written as JSON (valid YAML): serde_yaml writes the string "yes"
    /// unquoted, which Helm's YAML 1.1 reader takes for a boolean.
    fn write_values(&self, pools: &Value, log_level: &str) -> anyhow::Result<()> {
        let values = json!({
            "agent": {"logLevel": log_level},
            "controller": {"logLevel": log_level},
            "pools": pools,
            "monitoring": {"dashboards": {"enabled": true}},
        });
        std::fs::write(&self.values, serde_json::to_string(&values)?)?;
        Ok(())
    }

    fn values(&self) -> &str {
        self.values.to_str().unwrap_or_default()
    }

    /// Install the chart with the values file into a new namespace; every object of the
    /// release must exist afterwards. Returns them as Helm stored them.
    fn install(&self) -> anyhow::Result<Vec<Value>> {
        let (name, namespace) = (self.name.as_str(), self.namespace.as_str());
        let args = ["-n", namespace, "--create-namespace", "-f", self.values()];
        helm_live(&[&["install", name, CHART], &args[..]].concat())?;
        let objects = self.manifest()?;
        for object in &objects {
            live(object)?.with_context(|| format!("{:?} was not created", key(object)))?;
        }
        Ok(objects)
    }

    /// The objects of the release's current revision, as Helm stored them.
    fn manifest(&self) -> anyhow::Result<Vec<Value>> {
        parse_stream(&helm_live(&[
            "get",
            "manifest",
            &self.name,
            "-n",
            &self.namespace,
        ])?)
    }

    fn history(&self) -> anyhow::Result<Vec<Value>> {
        let text = helm_live(&["history", &self.name, "-n", &self.namespace])?;
        Ok(serde_json::from_str(&text)?)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm_live(&["uninstall", &self.name, "-n", &self.namespace]);
        let _ = kubectl(&[
            "delete",
            "namespace",
            &self.namespace,
            "--wait=false",
            "--ignore-not-found",
        ]);
        let _ = std::fs::remove_file(&self.values);
    }
}

/// The live object of a manifest's object, or None when it is not there.
fn live(object: &Value) -> anyhow::Result<Option<Value>> {
    let (kind, name) = key(object);
    let target = format!("{kind}/{name}");
    let mut args = vec!["get", target.as_str(), "-o", "json", "--ignore-not-found"];
    if let Some(namespace) = object["metadata"]["namespace"].as_str() {
        args.extend(["-n", namespace]);
    }
    let text = kubectl_ok(&args)?;
    Ok(if text.trim().is_empty() {
        None
    } else {
        Some(serde_json::from_str(&text)?)
    })
}

fn live_named(kind: &str, name: &str, namespace: &str) -> anyhow::Result<Value> {
    let object = json!({"kind": kind, "metadata": {"name": name, "namespace": namespace}});
    live(&object)?.with_context(|| format!("{kind} {namespace}/{name} does not exist"))
}

fn pools(release: &str, min_available: u32) -> Value {
    json!([
        {"name": format!("{release}-nfs"), "nfs": {"server": "nfs.invalid", "path": "/export", "minAvailable": min_available}},
        {"name": format!("{release}-local"), "local": {"discoveryDir": "/mnt/helm-test-disks"}},
    ])
}

/// The ReplicaSets of a Deployment whose pods run with `RUST_LOG=<level>`.
fn replica_sets_logging(namespace: &str, level: &str) -> anyhow::Result<usize> {
    let text = kubectl_ok(&["get", "replicasets", "-n", namespace, "-o", "json"])?;
    let list: Value = serde_json::from_str(&text)?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rs| env(rs, "RUST_LOG") == level)
        .count())
}

#[tokio::test]
async fn install_upgrade_rollback_and_uninstall_a_release() -> anyhow::Result<()> {
    let release = Release::new();
    release.write_values(&pools(&release.name, 1), "info")?;
    let (name, namespace) = (release.name.as_str(), release.namespace.as_str());

    // Install: every object of the release exists, the CRDs too.
    let objects = release.install()?;
    for crd in ["volumepools.volpool.io", "nodevolumes.volpool.io"] {
        kubectl_ok(&["get", "customresourcedefinition", crd])?;
    }
    let prefix = release.prefix();
    let deployment = live_named("Deployment", &format!("{prefix}-controller"), namespace)?;
    assert_eq!(
        container(&deployment)["image"],
        format!("volpool-controller:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        format!("{prefix}-controller")
    );
    // No kubelet in this cluster: the controller-manager creating the pods is as far as it goes.
    wait_for(
        "the controller Deployment's 2 pods",
        Duration::from_secs(60),
        || async {
            let deployment = live_named("Deployment", &format!("{prefix}-controller"), namespace)?;
            Ok((deployment["status"]["replicas"] == 2).then_some(()))
        },
    )
    .await?;
    let maps: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .filter_map(|o| live(o).ok().flatten())
        .collect();
    assert_dashboards(&maps, &prefix);

    // Upgrade: the log level and the NFS pool's minAvailable change; the pods roll.
    release.write_values(&pools(name, 2), "debug")?;
    helm_live(&[
        "upgrade",
        name,
        CHART,
        "-n",
        namespace,
        "-f",
        release.values(),
    ])?;
    let agent = live_named("DaemonSet", &format!("{prefix}-agent"), namespace)?;
    assert_eq!(env(&agent, "RUST_LOG"), "debug");
    let pool = |min: u32| {
        let expected = min;
        async move {
            wait_for(
                &format!("the NFS pool's minAvailable {expected}"),
                Duration::from_secs(30),
                || async {
                    let pool = live(
                        &json!({"kind": "VolumePool", "metadata": {"name": format!("{name}-nfs")}}),
                    )?;
                    Ok(pool
                        .filter(|p| p["spec"]["nfs"]["minAvailable"] == expected)
                        .map(|_| ()))
                },
            )
            .await
        }
    };
    pool(2).await?;
    wait_for(
        "a ReplicaSet of controller pods with RUST_LOG=debug",
        Duration::from_secs(60),
        || async { Ok((replica_sets_logging(namespace, "debug")? > 0).then_some(())) },
    )
    .await?;
    let history = release.history()?;
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[1]["status"], "deployed");

    // Rollback to the first revision: the values come back, as a third revision.
    helm_live(&["rollback", name, "1", "-n", namespace])?;
    let agent = live_named("DaemonSet", &format!("{prefix}-agent"), namespace)?;
    assert_eq!(env(&agent, "RUST_LOG"), "info");
    let controller = live_named("Deployment", &format!("{prefix}-controller"), namespace)?;
    assert_eq!(env(&controller, "RUST_LOG"), "info");
    pool(1).await?;
    let history = release.history()?;
    assert_eq!(history.len(), 3, "{history:?}");
    assert_eq!(history[2]["status"], "deployed");

    // Uninstall: nothing of the release is left but the CRDs (and PVs, which Helm never made).
    let objects = release.manifest()?;
    helm_live(&["uninstall", name, "-n", namespace, "--wait"])?;
    for object in &objects {
        wait_for(
            &format!("{:?} to be deleted", key(object)),
            Duration::from_secs(60),
            || async { Ok(live(object)?.is_none().then_some(())) },
        )
        .await?;
    }
    for crd in ["volumepools.volpool.io", "nodevolumes.volpool.io"] {
        kubectl_ok(&["get", "customresourcedefinition", crd])?;
    }
    let secrets = kubectl_ok(&[
        "get",
        "secrets",
        "-n",
        namespace,
        "-l",
        &format!("owner=helm,name={name}"),
        "-o",
        "name",
    ])?;
    assert!(secrets.trim().is_empty(), "release records left: {secrets}");
    Ok(())
}

/// Every value set (tests/helm/every-value.yaml), made fit for a shared cluster: names of this
/// release, no default StorageClass (other tests' claims would get it), no Prometheus operator
/// kinds (this cluster lacks their CRDs).
fn every_value_for(release: &Release) -> anyhow::Result<Value> {
    let mut values: Value = serde_yaml::from_str(&read("tests/helm/every-value.yaml"))?;
    values["fullnameOverride"] = json!(release.prefix());
    for pool in values["pools"].as_array_mut().into_iter().flatten() {
        pool["name"] = json!(format!("{}-{}", release.name, text(&pool["name"])));
        if pool.get("storageClassName").is_some() {
            pool["storageClassName"] = json!(format!("{}-class", text(&pool["name"])));
        }
        pool["storageClass"]["isDefaultClass"] = json!(false);
    }
    let monitoring = &mut values["monitoring"];
    monitoring["podMonitor"]["enabled"] = json!(false);
    monitoring["prometheusRule"]["enabled"] = json!(false);
    monitoring["dashboards"]["namespace"] = json!(release.namespace);
    Ok(values)
}

/// Whether `actual` holds every field of `expected` (objects may have more fields).
fn holds(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected
            .iter()
            .all(|(k, v)| actual.get(k).is_some_and(|a| holds(a, v))),
        _ => actual == expected,
    }
}

#[tokio::test]
async fn every_value_installs_on_the_1_20_apiserver() -> anyhow::Result<()> {
    // NB: Helm v4 applies server-side, and the 1.20 apiserver refuses a list item that lacks a
    // key of its list (a port without protocol): this proves every list the values fill.
    let release = Release::new();
    let values = every_value_for(&release)?;
    std::fs::write(&release.values, serde_json::to_string(&values)?)?;
    let objects = release.install()?;
    let namespace = release.namespace.as_str();
    for kind in [
        "DaemonSet",
        "Deployment",
        "VolumePool",
        "StorageClass",
        "ConfigMap",
    ] {
        assert!(
            objects.iter().any(|o| o["kind"] == kind),
            "no {kind} in the release"
        );
    }
    for pool in objects.iter().filter(|o| o["kind"] == "VolumePool") {
        let live = live(pool)?.context("the pool is gone")?;
        // NB: the apiserver adds the CRD's defaults; everything the chart set must be there.
        let spec = (&live["spec"], &pool["spec"]);
        assert!(holds(spec.0, spec.1), "{:?}: {}", key(pool), spec.0);
    }
    let controller = live_named(
        "Deployment",
        &format!("{}-controller", release.prefix()),
        namespace,
    )?;
    let pod = &controller["spec"]["template"]["spec"];
    assert_eq!(pod["tolerations"], values["controller"]["tolerations"]);
    assert_eq!(
        container(&controller)["volumeMounts"],
        values["controller"]["extraVolumeMounts"]
    );
    Ok(())
}

#[tokio::test]
async fn a_packaged_chart_installs() -> anyhow::Result<()> {
    let dir = TempDir::new("helm-package")?;
    let archive = helm_ok(&[
        "package",
        CHART,
        "-d",
        dir.0.to_str().context("temp dir is not UTF-8")?,
    ])?;
    let archive = PathBuf::from(archive.trim());
    let file_name = format!("volpool-{}.tgz", env!("CARGO_PKG_VERSION"));
    assert_eq!(archive.file_name(), Some(std::ffi::OsStr::new(&file_name)));
    let listing = Command::new("tar").arg("tzf").arg(&archive).output()?;
    let listing = String::from_utf8(listing.stdout)?;
    for member in [
        "volpool/Chart.yaml",
        "volpool/values.schema.json",
        "volpool/crds/volumepools.volpool.io.yaml",
        "volpool/dashboards/pools.json",
        "volpool/files/rules.yaml",
    ] {
        assert!(
            listing.lines().any(|l| l == member),
            "{member} is not in the archive:\n{listing}"
        );
    }

    let release = Release::new();
    let archive = archive.to_str().context("archive path is not UTF-8")?;
    helm_live(&[
        "install",
        &release.name,
        archive,
        "-n",
        &release.namespace,
        "--create-namespace",
    ])?;
    for kind in ["DaemonSet", "ServiceAccount"] {
        live_named(
            kind,
            &format!("{}-agent", release.prefix()),
            &release.namespace,
        )?;
    }
    live_named(
        "Deployment",
        &format!("{}-controller", release.prefix()),
        &release.namespace,
    )?;
    Ok(())
}

/// A control plane of its own with one real node (kubelet, containerd, kube-proxy:
/// `tests/cluster/up --nodes 1`) and the `:dev` images of this workspace loaded into it;
/// brought down on drop. Its own, because the agents of a release listen on every node's port
/// 9810: no other installation may share its nodes.
struct NodeCluster {
    dir: PathBuf,
    kubeconfig: String,
}

impl NodeCluster {
    fn up() -> anyhow::Result<Self> {
        let images = run(Command::new("flock")
            .arg(std::env::temp_dir().join("volpool-build-local.lock"))
            .arg(repo_root().join("deploy/images/build-local"))
            .arg("volpool"))?;
        let dir = std::env::temp_dir().join(unique("volpool-helm-nodes"));
        let mut cluster = Self {
            dir,
            kubeconfig: String::new(),
        };
        let up = run(cluster.script("tests/cluster/up").args(["--nodes", "1"]))?;
        cluster.kubeconfig = up
            .lines()
            .filter_map(|l| l.strip_prefix("export KUBECONFIG="))
            .next_back()
            .context("tests/cluster/up printed no KUBECONFIG")?
            .trim()
            .to_string();
        let tarballs = images.lines().filter_map(|l| l.split_whitespace().nth(1));
        run(cluster.script("tests/cluster/node-load").args(tarballs))?;
        Ok(cluster)
    }

    fn script(&self, path: &str) -> Command {
        let mut command = Command::new(repo_root().join(path));
        command
            .env("VOLPOOL_CLUSTER_DIR", &self.dir)
            .current_dir(repo_root());
        command
    }

    fn helm(&self, args: &[&str]) -> anyhow::Result<String> {
        helm_ok(&[&["--kubeconfig", self.kubeconfig.as_str()], args].concat())
    }

    fn get(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut command = Command::new(kubectl_path());
        command.args(["--kubeconfig", &self.kubeconfig, "get", "-o", "json"]);
        Ok(serde_json::from_str(&run(command.args(args))?)?)
    }
}

impl Drop for NodeCluster {
    fn drop(&mut self) {
        let _ = self.script("tests/cluster/down").output();
        let _ = std::fs::remove_file(self.dir.with_extension("lock"));
    }
}

fn condition(object: &Value, kind: &str) -> bool {
    items(&object["status"]["conditions"])
        .iter()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// Every container of the release's pods runs with `RUST_LOG=<level>` and is ready.
fn pods_log_at(cluster: &NodeCluster, namespace: &str, level: &str) -> anyhow::Result<bool> {
    let pods = cluster.get(&["pods", "-n", namespace])?;
    let pods: Vec<&Value> = items(&pods["items"])
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    Ok(pods.len() == 3
        && pods.iter().all(|pod| {
            let ready = condition(pod, "Ready");
            let level_set = items(&pod["spec"]["containers"][0]["env"])
                .iter()
                .any(|e| e["name"] == "RUST_LOG" && e["value"] == level);
            ready && level_set
        }))
}

#[tokio::test]
async fn on_a_real_node_the_release_runs_makes_pvs_rolls_and_leaves_them() -> anyhow::Result<()> {
    let cluster = NodeCluster::up()?;
    let pool = unique("helm-disks");
    let disk = format!("/mnt/{pool}/vol1");
    run(cluster.script("tests/cluster/node-exec").args([
        "node-1",
        "--",
        "sh",
        "-c",
        &format!("mkdir -p {disk} && mount -t tmpfs -o size=2g volpool-helm {disk}"),
    ]))?;
    // NB: in the cluster dir, which `down` removes.
    let values = cluster.dir.join("values.json");
    let dev = json!({"tag": "dev", "pullPolicy": "Never"});
    let given = json!({
        "agent": {"image": dev},
        "controller": {"image": dev},
        "pools": [{"name": pool, "local": {"discoveryDir": format!("/mnt/{pool}")}}],
    });
    std::fs::write(&values, serde_json::to_string(&given)?)?;
    let values = values.to_str().context("temp path is not UTF-8")?;
    let namespace = "volpool-system";
    let release = ["-n", namespace, "-f", values, "--wait", "--timeout", "3m"];

    // Install as the README says: the agent Ready on the node, the controller Available with
    // a leader, and the pool's disk a PV.
    cluster.helm(
        &[
            &["install", "volpool", CHART, "--create-namespace"],
            &release[..],
        ]
        .concat(),
    )?;
    let deployment = cluster.get(&["deployment", "volpool-controller", "-n", namespace])?;
    assert!(
        condition(&deployment, "Available"),
        "{}",
        deployment["status"]
    );
    let agents = cluster.get(&["daemonset", "volpool-agent", "-n", namespace])?;
    assert_eq!(agents["status"]["numberReady"], 1, "{}", agents["status"]);
    let lease = cluster.get(&["lease", "volpool-controller", "-n", namespace])?;
    let holder = text(&lease["spec"]["holderIdentity"]);
    assert!(
        holder.starts_with("volpool-controller-"),
        "Lease holder {holder:?}"
    );
    let selector = format!("volpool.io/pool={pool}");
    let pvs = || async {
        let list = cluster.get(&["pv", "-l", &selector])?;
        Ok((!items(&list["items"]).is_empty()).then_some(()))
    };
    wait_for("a PV of the pool's disk", Duration::from_secs(60), pvs).await?;

    // Upgrade the log level: the pods roll, and all of them run with the new value.
    let debug = ["--set", "agent.logLevel=debug,controller.logLevel=debug"];
    cluster.helm(&[&["upgrade", "volpool", CHART], &release[..], &debug[..]].concat())?;
    wait_for(
        "every pod rolled to RUST_LOG=debug",
        Duration::from_secs(120),
        || async { Ok(pods_log_at(&cluster, namespace, "debug")?.then_some(())) },
    )
    .await?;

    // Uninstall: the workloads go, the PV and the CRDs stay, as the README says.
    cluster.helm(&["uninstall", "volpool", "-n", namespace, "--wait"])?;
    for kind in ["daemonset", "deployment", "volumepool"] {
        let left = cluster.get(&[kind, "-A", "-l", "app.kubernetes.io/instance=volpool"])?;
        assert!(items(&left["items"]).is_empty(), "{kind} left: {left}");
    }
    let pvs = cluster.get(&["pv", "-l", &selector])?;
    assert_eq!(items(&pvs["items"]).len(), 1, "the pool's PV must stay");
    cluster.get(&["crd", "volumepools.volpool.io", "nodevolumes.volpool.io"])?;

    // The README's commands that remove what uninstall leaves, run as written.
    for command in readme_commands("To remove those too")? {
        let (program, args) = command.split_first().context("empty README command")?;
        ensure!(
            program == "kubectl",
            "README command {command:?} is not kubectl"
        );
        let mut kubectl = Command::new(kubectl_path());
        run(kubectl
            .args(["--kubeconfig", &cluster.kubeconfig])
            .args(args))?;
    }
    let pvs = cluster.get(&["pv", "-l", "volpool.io/pool"])?;
    assert!(items(&pvs["items"]).is_empty(), "PVs left: {pvs}");
    let crds = cluster.get(&["crd"])?;
    let left = items(&crds["items"])
        .iter()
        .any(|c| text(&c["metadata"]["name"]).ends_with(".volpool.io"));
    assert!(!left, "volpool CRDs left");
    let nodes = cluster.get(&["nodes", "-l", "volpool.io/nfs-client"])?;
    assert!(items(&nodes["items"]).is_empty(), "nfs-client labels left");
    Ok(())
}

/// The commands of the first `sh` block of README.md after the line holding `after`, one per
/// line, comments dropped.
fn readme_commands(after: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let readme = read("README.md");
    let start = readme
        .find(after)
        .context("README.md lacks the paragraph")?;
    let block = readme[start..]
        .split("```sh\n")
        .nth(1)
        .context("no sh block after it")?;
    let block = block.split("```").next().unwrap_or_default();
    Ok(block
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect())
}
