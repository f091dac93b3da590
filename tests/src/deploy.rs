//! The `deploy/` base in the test cluster: its RBAC applied for real, and kubeconfigs that
//! carry its ServiceAccounts' tokens, so the agent and the controller run with exactly the
//! permissions an installation gives them.
//!
//! ```text
//!  deploy/namespace.yaml + deploy/rbac/ ──kubectl apply --server-side──► apiserver
//!  token controller ──► Secret volpool-system/<sa>-token-* ──► service_account_kubeconfig(sa)
//! ```
//!
//! Applying is idempotent (server-side apply, one field manager), so every test may call
//! [`apply_rbac`] even though all tests share the cluster's cluster-scoped objects.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::config::Kubeconfig;
use serde_json::json;
use volpool_testkit::{check, stdout_of};

use crate::{FIELD_MANAGER, client, kubeconfig, repo_root, unique, wait_for};

/// Namespace of everything `deploy/` installs.
pub const NAMESPACE: &str = "volpool-system";
/// ServiceAccount (and ClusterRole) of the node agent.
pub const AGENT: &str = "volpool-agent";
/// ServiceAccount (and ClusterRole) of the pool controller.
pub const CONTROLLER: &str = "volpool-controller";

/// The kubectl that matches the v1.20.2 test server (with kustomize v2.0.3 inside), kept beside
/// the cached server binaries by `tests/cluster/up`.
pub fn kubectl_path() -> PathBuf {
    let cache = std::env::var_os("VOLPOOL_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                })
                .join("volpool")
        });
    cache.join("kubernetes-1.20.2/bin/kubectl")
}

/// Run the matching kubectl against the test cluster (admin credentials) from the repository
/// root. Returns the output whatever the exit status.
pub fn kubectl(args: &[&str]) -> anyhow::Result<Output> {
    let path = kubectl_path();
    Command::new(&path)
        .arg("--kubeconfig")
        .arg(kubeconfig()?)
        .args(args)
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("failed to run {}", path.display()))
}

/// Like [`kubectl`], but fail unless it exits 0; returns its stdout.
pub fn kubectl_ok(args: &[&str]) -> anyhow::Result<String> {
    stdout_of(&kubectl(args)?, &format!("kubectl {}", args.join(" ")))
}

/// Apply the base's Namespace, ServiceAccounts, roles and bindings for real.
pub fn apply_rbac() -> anyhow::Result<()> {
    // NB: two processes creating the same Namespace at once: one would get AlreadyExists.
    let lock = std::env::temp_dir().join("volpool-deploy-rbac.lock");
    let path = kubectl_path();
    let output = Command::new("flock")
        .arg(&lock)
        .arg(&path)
        .arg("--kubeconfig")
        .arg(kubeconfig()?)
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            &format!("--field-manager={FIELD_MANAGER}"),
            "-f",
            "deploy/namespace.yaml",
            // NB: the files, not the directory, which holds a kustomization.yaml too.
            "-f",
            "deploy/rbac/agent.yaml",
            "-f",
            "deploy/rbac/controller.yaml",
        ])
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("failed to run {}", path.display()))?;
    check(&output, "applying deploy/ RBAC")
}

/// The token of ServiceAccount `volpool-system/<name>`, from the Secret that 1.20's token
/// controller makes for it. Applies the RBAC first.
pub async fn service_account_token(name: &str) -> anyhow::Result<String> {
    apply_rbac()?;
    let client = client().await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(client, NAMESPACE);
    wait_for(
        &format!("the token Secret of ServiceAccount {NAMESPACE}/{name}"),
        Duration::from_secs(60),
        || async {
            let account = accounts.get(name).await?;
            for reference in account.secrets.iter().flatten() {
                let Some(secret_name) = reference.name.as_deref() else {
                    continue;
                };
                let Some(secret) = secrets.get_opt(secret_name).await? else {
                    continue;
                };
                let token = secret.data.as_ref().and_then(|d| d.get("token"));
                if let Some(token) = token.filter(|t| !t.0.is_empty()) {
                    return Ok(Some(String::from_utf8(token.0.clone())?));
                }
            }
            Ok(None)
        },
    )
    .await
}

/// Write a kubeconfig for the test cluster that authenticates with the token of ServiceAccount
/// `volpool-system/<name>` (`volpool-agent` or `volpool-controller`), and nothing else.
/// Applies the base's RBAC first. Use it as the `KUBECONFIG` of an agent or controller process.
/// It is kept in [`crate::cluster_files`], one per account.
pub async fn service_account_kubeconfig(name: &str) -> anyhow::Result<PathBuf> {
    let token = service_account_token(name).await?;
    let admin_path = kubeconfig()?;
    let admin = Kubeconfig::read_from(&admin_path)
        .with_context(|| format!("failed to read kubeconfig {}", admin_path.display()))?;
    let cluster_name = admin
        .current_context
        .as_deref()
        .and_then(|current| admin.contexts.iter().find(|c| c.name == current))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = admin
        .clusters
        .iter()
        .find(|c| cluster_name.as_deref().is_none_or(|n| c.name == n))
        .context("the test kubeconfig has no cluster")?;
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": cluster.name, "user": name}}],
        "current-context": name,
    });
    // NB: one file per account and cluster, rewritten by each call (the same token) through a
    // rename, so a process reading it never sees half a file; the path's hash keeps the
    // clusters apart when they share the temp dir.
    let cluster = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        admin_path.hash(&mut hasher);
        hasher.finish() as u32
    };
    let path = crate::cluster_files().join(format!("{name}-{cluster:08x}.kubeconfig"));
    let part = path.with_extension(format!("kubeconfig.{}", unique("part")));
    write_private(&part, &serde_yaml::to_string(&config)?)?;
    std::fs::rename(&part, &path)
        .with_context(|| format!("failed to rename {} to {}", part.display(), path.display()))?;
    Ok(path)
}

/// Write a file only its owner can read (it holds a token).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("failed to write {}", path.display()))
}

/// The metrics a markdown document lists: the names in backquotes in the first column of the
/// tables under its `## Metrics` heading (up to the next `## ` heading). The top `README.md`'s
/// table is what dashboards and alert rules may query; `docs/architecture.md` lists the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentedMetrics {
    /// Every metric name listed.
    pub names: BTreeSet<String>,
    /// The histograms among them (their description starts with "histogram"): each also has
    /// `_bucket`, `_sum` and `_count` series.
    pub histograms: BTreeSet<String>,
}

impl DocumentedMetrics {
    /// The metrics of the markdown file at `path` (relative to the repository root).
    pub fn of_file(path: &str) -> anyhow::Result<Self> {
        let path = repo_root().join(path);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        Ok(Self::parse(&text))
    }

    /// The metrics listed in `markdown`'s `## Metrics` section.
    pub fn parse(markdown: &str) -> Self {
        let mut metrics = Self::default();
        let section = markdown_section(markdown, "Metrics");
        for row in section
            .into_iter()
            .filter(|line| line.starts_with("| `volpool_"))
        {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let names: Vec<String> = cells[1]
                .split('`')
                .filter(|part| part.starts_with("volpool_"))
                .map(str::to_string)
                .collect();
            if row_is_histogram(&cells) {
                metrics.histograms.extend(names.iter().cloned());
            }
            metrics.names.extend(names);
        }
        metrics
    }

    /// Whether `name` is a series of a listed metric (a histogram's `_bucket`/`_sum`/`_count`
    /// too).
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| self.histograms.contains(base))
            })
    }
}

/// The lines of a markdown document's `## <heading>` section, up to the next `## ` heading.
pub fn markdown_section<'a>(markdown: &'a str, heading: &str) -> Vec<&'a str> {
    let heading = format!("## {heading}");
    markdown
        .lines()
        .skip_while(|line| line.trim_end() != heading)
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .collect()
}

/// Whether a metrics table row (its cells split on `|`) describes a histogram: its last
/// non-empty cell starts with "histogram".
fn row_is_histogram(cells: &[&str]) -> bool {
    cells
        .iter()
        .rev()
        .find(|cell| !cell.is_empty())
        .is_some_and(|cell| cell.starts_with("histogram"))
}

/// A metric selector in a PromQL expression: the metric name and its `{...}` matchers, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The metric name.
    pub metric: String,
    /// The text between the braces (empty when there are none).
    pub matchers: String,
}

/// The metric selectors of a PromQL expression (Grafana variables like `$__rate_interval`
/// allowed). A small scanner, not a parser: enough for the queries of this repository.
pub fn promql_selectors(expr: &str) -> Vec<Selector> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
    let chars: Vec<char> = expr.chars().collect();
    let skip_to = |from: usize, close: char| -> usize {
        let mut i = from + 1;
        let mut quote = None;
        while i < chars.len() {
            match (quote, chars[i]) {
                (Some(_), '\\') => i += 1,
                (Some(q), c) if c == q => quote = None,
                (None, c @ ('"' | '\'' | '`')) => quote = Some(c),
                (None, c) if c == close => return i + 1,
                _ => {}
            }
            i += 1;
        }
        i
    };
    let next_non_space = |from: usize| chars[from..].iter().copied().find(|c| !c.is_whitespace());
    let mut selectors = Vec::new();
    let mut label_list_next = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_to(i, c);
        } else if c == '[' {
            i = skip_to(i, ']');
        } else if c == '{' {
            i = skip_to(i, '}');
        } else if c == '(' && label_list_next {
            label_list_next = false;
            i = skip_to(i, ')');
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // NB: a Grafana variable, or a number such as 4e9.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if LABEL_LISTS.contains(&word.as_str()) {
                label_list_next = next_non_space(i) == Some('(');
            } else if AGGREGATIONS.contains(&word.as_str())
                || KEYWORDS.contains(&word.to_lowercase().as_str())
                || next_non_space(i) == Some('(')
            {
                // an aggregation, a keyword or a function
            } else {
                let matchers = if chars.get(i) == Some(&'{') {
                    let end = skip_to(i, '}');
                    let text: String = chars[i + 1..end - 1].iter().collect();
                    i = end;
                    text
                } else {
                    String::new()
                };
                selectors.push(Selector {
                    metric: word,
                    matchers,
                });
            }
        } else {
            i += 1;
        }
    }
    selectors
}
