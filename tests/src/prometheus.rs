//! The real Prometheus (Debian's `prometheus`, installed by `tests/setup-prometheus`) on a
//! loopback port, scraping the processes a test started, and its HTTP query API.
//!
//! ```text
//!  test ──► Prometheus::start(targets) ──► prometheus --config.file <tmp>/prometheus.yml
//!                                            └─ scrapes 127.0.0.1:<agent>, 127.0.0.1:<controller> every 1 s
//!       ──► query() / query_range() / label_values() ──► /api/v1/… ──► JSON `data.result`
//! ```

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::wait_for;
use volpool_testkit::{TempDir, free_port};

/// One scrape target: a job name, `host:port`, and labels put on all its series.
#[derive(Clone, Debug)]
pub struct Target {
    /// The `job` label (`volpool-agent`, `volpool-controller`, as the PodMonitor sets it).
    pub job: String,
    /// `127.0.0.1:<port>` of its `/metrics`.
    pub address: String,
    /// Extra target labels, e.g. `node` (which the PodMonitor's relabeling adds in a cluster).
    pub labels: Vec<(String, String)>,
}

impl Target {
    /// A target without extra labels.
    pub fn new(job: &str, address: &str) -> Target {
        Target {
            job: job.to_string(),
            address: address.to_string(),
            labels: Vec::new(),
        }
    }

    /// Add a target label.
    pub fn label(mut self, name: &str, value: &str) -> Target {
        self.labels.push((name.to_string(), value.to_string()));
        self
    }
}

/// A running Prometheus, killed (and its data deleted) on drop.
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: TempDir,
}

/// Seconds since the epoch, as Prometheus' API takes them.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl Prometheus {
    /// Start Prometheus scraping `targets` every second; returns once it is ready.
    pub async fn start(targets: &[Target]) -> anyhow::Result<Prometheus> {
        let dir = TempDir::new("volpool-prometheus")?;
        let mut jobs: Vec<(&str, Vec<&Target>)> = Vec::new();
        for target in targets {
            match jobs.iter_mut().find(|(job, _)| *job == target.job) {
                Some((_, list)) => list.push(target),
                None => jobs.push((&target.job, vec![target])),
            }
        }
        let scrape_configs: Vec<Value> = jobs
            .iter()
            .map(|(job, list)| {
                let static_configs: Vec<Value> = list
                    .iter()
                    .map(|t| {
                        let labels: serde_json::Map<String, Value> = t
                            .labels
                            .iter()
                            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                            .collect();
                        serde_json::json!({"targets": [t.address], "labels": labels})
                    })
                    .collect();
                serde_json::json!({"job_name": job, "static_configs": static_configs})
            })
            .collect();
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrape_configs,
        });
        let config_path = dir.join("prometheus.yml");
        // NB: JSON is YAML.
        std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("failed to start prometheus (tests/setup-prometheus installs it)")?;
        let prometheus = Prometheus { child, port, dir };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            let ready = prometheus.get("/-/ready", &[]).is_ok();
            async move { Ok(ready.then_some(())) }
        })
        .await
        .map_err(|e| e.context(prometheus.log()))?;
        Ok(prometheus)
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("prometheus log:\n{}", tail.join("\n"))
    }

    /// GET `path` with URL-encoded `params`; the body of a 2xx answer.
    fn get(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-G", "--fail-with-body", "--max-time", "30"]);
        for (name, value) in params {
            cmd.arg("--data-urlencode").arg(format!("{name}={value}"));
        }
        let out = cmd
            .arg(format!("{}{path}", self.url()))
            .output()
            .context("failed to run curl")?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "GET {path} {params:?}: {body}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(body)
    }

    /// `data` of an API answer whose status is success.
    fn api(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<Value> {
        let body = self.get(path, params)?;
        let answer: Value = serde_json::from_str(&body)
            .with_context(|| format!("{path} answered no JSON: {body}"))?;
        if answer["status"] != "success" {
            bail!("{path} {params:?}: {answer}");
        }
        Ok(answer["data"].clone())
    }

    /// An instant query at now: the result's series (`metric`, `value`).
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.api("/api/v1/query", &[("query", expr.to_string())])?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// A range query from `start` (unix seconds) to now, one point per `step` seconds: the
    /// result's series (`metric`, `values`).
    pub fn query_range(&self, expr: &str, start: f64, step: f64) -> anyhow::Result<Vec<Value>> {
        let data = self.api(
            "/api/v1/query_range",
            &[
                ("query", expr.to_string()),
                ("start", format!("{start:.3}")),
                ("end", format!("{:.3}", unix_now())),
                ("step", step.to_string()),
            ],
        )?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Values of `label` on the series matching `selector` (Grafana's `label_values`).
    pub fn label_values(&self, selector: &str, label: &str) -> anyhow::Result<Vec<String>> {
        let data = self.api(
            &format!("/api/v1/label/{label}/values"),
            &[("match[]", selector.to_string())],
        )?;
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }

    /// The scrape targets whose health is not `up`, as `job address: lastError`.
    pub fn targets_down(&self) -> anyhow::Result<Vec<String>> {
        let data = self.api("/api/v1/targets", &[])?;
        Ok(data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["health"] != "up")
            .map(|t| {
                format!(
                    "{} {}: {}",
                    t["labels"]["job"], t["scrapeUrl"], t["lastError"]
                )
            })
            .collect())
    }
}

/// Whether a query result holds at least one number that is not NaN (what a Grafana panel
/// would draw): instant results have `value`, range results `values`.
pub fn has_a_number(result: &[Value]) -> bool {
    let is_number = |pair: &Value| {
        pair[1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(|v| !v.is_nan())
    };
    result.iter().any(|series| {
        is_number(&series["value"])
            || series["values"]
                .as_array()
                .into_iter()
                .flatten()
                .any(is_number)
    })
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
