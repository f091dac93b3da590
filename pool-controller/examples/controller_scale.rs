//! Benchmark driver behind `bench/controller-scale`: publishes `nodes × volumes` NodeVolumes
//! straight into the apiserver, measures the apiserver's raw PV-creation rate, then times the
//! real controller binary until every PV exists, checks that its idle passes (over the changed
//! nodes, and over every node) write nothing and times them, and times one NodeVolumes change
//! to the matching PV write.
//!
//! ```text
//!  driver ──► Nodes + NodeVolumes (agent-style SSA) ──► apiserver ◄── volpool-controller (timed)
//!         ──► raw loop: create N PVs, concurrent ──────► apiserver (baseline)
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::json;
use volpool_api::{NodeVolumes, VolumePool};
use volpool_testkit::{free_port, http_get, metrics};

const BENCH_LABEL: &str = "volpool.io/bench";

struct Args {
    controller: String,
    nodes: usize,
    volumes: usize,
    concurrency: usize,
    /// `$VOLPOOL_CLUSTER_DIR` of the cluster: its `pids/*.pid` name the processes whose CPU
    /// time is reported per phase.
    cluster_dir: Option<String>,
    /// Also time a raw loop of server-side applies (the controller's kind of write).
    raw_apply: bool,
    /// Where the controller's log goes (its passes at level debug); else a temporary file.
    controller_log: Option<String>,
    /// Leave the PVs, Nodes and pool in place (the cluster is torn down instead).
    no_cleanup: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        controller: "target/release/volpool-controller".into(),
        nodes: 500,
        volumes: 20,
        concurrency: 32,
        cluster_dir: None,
        raw_apply: false,
        controller_log: None,
        no_cleanup: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--raw-apply" || flag == "--no-cleanup" {
            args.raw_apply |= flag == "--raw-apply";
            args.no_cleanup |= flag == "--no-cleanup";
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--controller" => args.controller = value,
            "--nodes" => args.nodes = value.parse()?,
            "--volumes" => args.volumes = value.parse()?,
            "--concurrency" => args.concurrency = value.parse()?,
            "--cluster-dir" => args.cluster_dir = Some(value),
            "--controller-log" => args.controller_log = Some(value),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

async fn run_all<F: std::future::Future<Output = anyhow::Result<()>>>(
    concurrency: usize,
    futures: impl Iterator<Item = F>,
) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = stream::iter(futures)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

fn pv(name: &str, node: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume",
           "metadata": {"name": name, "labels": {BENCH_LABEL: "raw"}},
           "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "bench", "persistentVolumeReclaimPolicy": "Delete",
                    "local": {"path": "/mnt/disks/vol"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}})
}

async fn count_pvs(client: &Client, selector: &str) -> anyhow::Result<usize> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let mut total = 0;
    let mut lp = ListParams::default().labels(selector).limit(5000);
    loop {
        let page = api.list_metadata(&lp).await?;
        total += page.items.len();
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => return Ok(total),
        }
    }
}

async fn wait_gone(client: &Client, selector: &str, concurrency: usize) -> anyhow::Result<()> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let names: Vec<String> = api
            .list_metadata(&ListParams::default().labels(selector))
            .await?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("PVs {selector} not gone after 15 minutes");
        }
        // NB: one delete per PV, concurrently: a 1.20 deletecollection of 10,000 PVs outlives
        // the client's request timeout.
        run_all(
            concurrency,
            names.into_iter().map(|name| {
                let api = api.clone();
                async move {
                    // NB: drop the pv-protection finalizer first: kube-controller-manager removes
                    // it one PV at a time (~40/s here), which would dominate the clean-up.
                    let unprotect = json!({"metadata": {"finalizers": null}});
                    match api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&unprotect))
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                        Err(e) => return Err(e.into()),
                    }
                    match api.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                        Err(e) => Err(e.into()),
                    }
                }
            }),
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Sum of the samples of metric `name` on the controller's `/metrics` at 127.0.0.1:`port`.
async fn metric(port: u16, name: &str) -> anyhow::Result<f64> {
    let (_, text) = tokio::task::spawn_blocking(move || http_get(port, "/metrics")).await??;
    Ok(metrics::sum(&text, name, &[]))
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // NB: the command name (field 2) may hold spaces; fields after it are split from its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/<pid>/stat (11 and 12 after the name).
    (ticks(11) + ticks(12)) / 100.0
}

/// The cluster's processes (`<dir>/pids/<name>.pid`) and their CPU seconds so far.
fn cluster_cpu(dir: Option<&str>) -> Vec<(String, f64)> {
    let Some(dir) = dir else {
        return Vec::new();
    };
    let mut out: Vec<(String, f64)> = std::fs::read_dir(format!("{dir}/pids"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e
                .file_name()
                .to_string_lossy()
                .strip_suffix(".pid")?
                .to_string();
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((name, cpu_seconds(pid)))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `name=seconds` for each process, from two `cluster_cpu` readings.
fn cpu_used(before: &[(String, f64)], after: &[(String, f64)]) -> String {
    after
        .iter()
        .map(|(name, t)| {
            let t0 = before.iter().find(|b| &b.0 == name).map_or(0.0, |b| b.1);
            format!("{name}={:.1}", t - t0)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_default()
}

/// A raw loop (`what`): `nodes × volumes` PVs written straight into the apiserver by
/// `write(api, name, node)`, `concurrency` at a time, then deleted again. How long the writes
/// took, and the cluster's CPU seconds meanwhile.
async fn raw_loop<F, Fut>(
    args: &Args,
    client: &Client,
    nodes: &[String],
    what: &str,
    write: F,
) -> anyhow::Result<(Duration, String)>
where
    F: Fn(Api<PersistentVolume>, String, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let dir = args.cluster_dir.as_deref();
    let total = args.nodes * args.volumes;
    let cpu0 = cluster_cpu(dir);
    let started = Instant::now();
    run_all(
        args.concurrency,
        (0..total).map(|i| {
            let node = nodes[i / args.volumes].clone();
            write(pvs.clone(), format!("{node}-raw-{i}"), node)
        }),
    )
    .await?;
    let took = started.elapsed();
    let cpu = cpu_used(&cpu0, &cluster_cpu(dir));
    eprintln!("{what}: {total} PVs in {:.2}s", took.as_secs_f64());
    wait_gone(client, &format!("{BENCH_LABEL}=raw"), args.concurrency).await?;
    Ok((took, cpu))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let client = Client::try_default().await?;
    let total = args.nodes * args.volumes;
    let run = format!("bench-{}", std::process::id());
    let ssa = PatchParams::apply("volpool-bench").force();
    let agent = PatchParams::apply(volpool_api::FIELD_MANAGER_AGENT).force();
    for crd in [
        volpool_api::crd::volume_pool(),
        volpool_api::crd::node_volumes(),
    ] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(client.clone())
            .patch(&name, &ssa, &Patch::Apply(&crd))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1. The apiserver's raw limit: create `total` PVs, `concurrency` requests at a time.
    let nodes: Vec<String> = (0..args.nodes)
        .map(|i| format!("{run}-node-{i:04}"))
        .collect();
    let dir = args.cluster_dir.as_deref();
    println!("load_average_at_start={}", load_average());
    let create = |pvs: Api<PersistentVolume>, name: String, node: String| async move {
        let body: PersistentVolume = serde_json::from_value(pv(&name, &node))?;
        pvs.create(&PostParams::default(), &body).await?;
        Ok(())
    };
    let (raw, raw_cpu) = raw_loop(&args, &client, &nodes, "raw loop", create).await?;
    let mut raw_apply = None;
    if args.raw_apply {
        let apply = |pvs: Api<PersistentVolume>, name: String, node: String| async move {
            let ssa = PatchParams::apply("volpool-bench").force();
            pvs.patch(&name, &ssa, &Patch::Apply(pv(&name, &node)))
                .await?;
            Ok(())
        };
        raw_apply = Some(raw_loop(&args, &client, &nodes, "raw apply loop", apply).await?);
    }

    // 2. Nodes and their reports, as agents would publish them.
    let node_api: Api<Node> = Api::all(client.clone());
    let reports: Api<NodeVolumes> = Api::all(client.clone());
    run_all(args.concurrency, nodes.iter().map(|node| {
        let (node_api, reports, ssa, agent) = (node_api.clone(), reports.clone(), ssa.clone(), agent.clone());
        let run = run.clone();
        let volumes = args.volumes;
        async move {
            let body = json!({"apiVersion": "v1", "kind": "Node",
                              "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, BENCH_LABEL: run}}});
            let created = node_api.patch(node, &ssa, &Patch::Apply(&body)).await?;
            let owner = created.controller_owner_ref(&()).context("node uid")?;
            let object = json!({"apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes",
                                "metadata": {"name": node, "ownerReferences": [owner]}, "spec": {}});
            reports.patch(node, &agent, &Patch::Apply(&object)).await?;
            let vols = volumes_json(&run, node, volumes, 10u64 << 30);
            let status = json!({"apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes",
                                "status": {"nodeUID": created.metadata.uid, "agentVersion": "bench", "volumes": vols}});
            reports.patch_status(node, &agent, &Patch::Apply(&status)).await?;
            Ok(())
        }
    }))
    .await?;
    let pool = json!({"apiVersion": "volpool.io/v1alpha1", "kind": "VolumePool",
                      "metadata": {"name": run, "labels": {BENCH_LABEL: run}},
                      "spec": {"storageClassName": "bench", "local": {"discoveryDir": "/mnt/disks"}}});
    Api::<VolumePool>::all(client.clone())
        .patch(&run, &ssa, &Patch::Apply(&pool))
        .await?;
    eprintln!("published {} NodeVolumes with {total} volumes", args.nodes);

    // 3. The controller, from start until every PV exists.
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let log_path = args
        .controller_log
        .clone()
        .unwrap_or_else(|| format!("/tmp/{run}-controller.log"));
    let log = std::fs::File::create(&log_path)?;
    let cpu0 = cluster_cpu(dir);
    let started = Instant::now();
    let mut child = std::process::Command::new(&args.controller)
        .args([
            "--metrics-addr",
            &addr,
            "--lease-namespace",
            "default",
            "--lease-name",
            &run,
            "--identity",
            &run,
        ])
        .args([
            "--pool-selector",
            &format!("{BENCH_LABEL}={run}"),
            "--resync",
            "5s",
            "--full-resync",
            "20s",
            "--concurrency",
            &args.concurrency.to_string(),
        ])
        .env("RUST_LOG", "info,volpool_controller::pass=debug")
        .env("NO_COLOR", "1")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("failed to start the controller")?;
    let pid = child.id();
    let selector = format!("{}={run}", volpool_api::LABEL_POOL);
    loop {
        let applied = metric(port, "volpool_controller_api_writes_total")
            .await
            .unwrap_or_default();
        if applied >= total as f64 && count_pvs(&client, &selector).await? >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("the controller did not create {total} PVs in an hour");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let converge = started.elapsed();
    let controller_cpu = cpu_seconds(pid);
    let converge_cpu = cpu_used(&cpu0, &cluster_cpu(dir));
    let rss = rss_kib(pid, "VmRSS:");
    eprintln!("controller: {total} PVs in {:.2}s", converge.as_secs_f64());

    // 4. Let it settle (pool status), then count the writes of idle passes and time them.
    let mut writes = metric(port, "volpool_controller_api_writes_total").await?;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = metric(port, "volpool_controller_api_writes_total").await?;
        if now == writes {
            break;
        }
        writes = now;
    }
    let settled_rss = rss_kib(pid, "VmRSS:");
    let seen = passes(&log_path).len();
    let deadline = Instant::now() + Duration::from_secs(300);
    let idle = loop {
        let idle: Vec<Pass> = passes(&log_path).split_off(seen);
        if idle.iter().any(|p| p.full) && idle.iter().filter(|p| !p.full).count() >= 2 {
            break idle;
        }
        if Instant::now() > deadline {
            bail!("no idle full pass in 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let idle_writes = metric(port, "volpool_controller_api_writes_total").await? - writes;

    // 5. One volume of one node changes size: time until its PV shows the new capacity.
    let mut changes = Vec::new();
    for node in [&nodes[0], &nodes[nodes.len() / 2], &nodes[nodes.len() - 1]] {
        changes.push(change_to_write(&client, &run, node, args.volumes).await?);
    }
    let peak = rss_kib(pid, "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();

    println!(
        "nodes={} volumes_per_node={} pvs={total} concurrency={}",
        args.nodes, args.volumes, args.concurrency
    );
    println!(
        "raw_loop_seconds={:.2} raw_pv_per_second={:.0}",
        raw.as_secs_f64(),
        total as f64 / raw.as_secs_f64()
    );
    println!(
        "controller_seconds={:.2} controller_pv_per_second={:.0} ratio_to_raw={:.2}",
        converge.as_secs_f64(),
        total as f64 / converge.as_secs_f64(),
        converge.as_secs_f64() / raw.as_secs_f64()
    );
    if let Some((took, cpu)) = &raw_apply {
        println!(
            "raw_apply_loop_seconds={:.2} raw_apply_pv_per_second={:.0}",
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64()
        );
        println!("raw_apply_loop_cpu_seconds: {cpu}");
    }
    println!("raw_loop_cpu_seconds: {raw_cpu}");
    println!("controller_phase_cpu_seconds: volpool-controller={controller_cpu:.1} {converge_cpu}");
    println!("load_average_at_end={}", load_average());
    println!("api_writes_until_settled={writes} idle_pass_writes={idle_writes}");
    for full in [false, true] {
        let mut seconds: Vec<f64> = idle
            .iter()
            .filter(|p| p.full == full)
            .map(|p| p.seconds)
            .collect();
        seconds.sort_by(f64::total_cmp);
        let writes: u64 = idle
            .iter()
            .filter(|p| p.full == full)
            .map(|p| p.writes)
            .sum();
        let plan: f64 = idle
            .iter()
            .filter(|p| p.full == full)
            .map(|p| p.plan_seconds)
            .sum();
        println!(
            "idle_passes scope={} count={} median_seconds={:.4} max_seconds={:.4} mean_plan_seconds={:.4} writes={writes}",
            if full { "all-nodes" } else { "changed-nodes" },
            seconds.len(),
            seconds.get(seconds.len() / 2).copied().unwrap_or_default(),
            seconds.last().copied().unwrap_or_default(),
            plan / seconds.len().max(1) as f64,
        );
    }
    for (node, seconds) in &changes {
        println!("change_to_pv_write node={node} seconds={seconds:.3}");
    }
    println!(
        "controller_rss_mib_at_converge={:.1} controller_rss_mib_settled={:.1} controller_peak_rss_mib={:.1}",
        rss as f64 / 1024.0,
        settled_rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    if args.controller_log.is_none() {
        let _ = std::fs::remove_file(&log_path);
    }
    if args.no_cleanup {
        return Ok(());
    }

    // 6. Clean up: the controller's PVs, the nodes (their NodeVolumes go by ownerReference), the pool.
    wait_gone(&client, &selector, args.concurrency).await?;
    run_all(
        args.concurrency,
        nodes.iter().map(|node| {
            let node_api = node_api.clone();
            async move {
                node_api.delete(node, &DeleteParams::default()).await?;
                Ok(())
            }
        }),
    )
    .await?;
    Api::<VolumePool>::all(client.clone())
        .delete(&run, &DeleteParams::default())
        .await?;
    Ok(())
}

/// One pass of the controller, from its log.
struct Pass {
    full: bool,
    writes: u64,
    plan_seconds: f64,
    seconds: f64,
}

/// Every pass the controller logged so far (`volpool_controller::pass` at level debug).
fn passes(log: &str) -> Vec<Pass> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(without_colours)
        .filter(|l| l.contains("volpool_controller::pass") && l.contains(" pass "))
        .filter_map(|line| {
            let field = |name: &str| {
                let rest = line.split(&format!(" {name}=")).nth(1)?;
                Some(
                    rest.split_whitespace()
                        .next()?
                        .trim_matches('"')
                        .to_string(),
                )
            };
            Some(Pass {
                full: field("nodes")? == "all",
                writes: field("writes")?.parse().ok()?,
                plan_seconds: field("plan_seconds")?.parse().ok()?,
                seconds: field("seconds")?.parse().ok()?,
            })
        })
        .collect()
}

/// A log line without its terminal colour codes (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// Grow the first volume of `node` by 1 GiB, as its agent would report it, and time until the
/// controller has written the new capacity into its PV.
async fn change_to_write(
    client: &Client,
    run: &str,
    node: &str,
    volumes: usize,
) -> anyhow::Result<(String, f64)> {
    let agent = PatchParams::apply(volpool_api::FIELD_MANAGER_AGENT).force();
    let reports: Api<NodeVolumes> = Api::all(client.clone());
    let uid = reports
        .get_status(node)
        .await?
        .status
        .map(|s| s.node_uid)
        .unwrap_or_default();
    let grown = 11u64 << 30;
    let status = json!({"apiVersion": "volpool.io/v1alpha1", "kind": "NodeVolumes",
                        "status": {"nodeUID": uid, "agentVersion": "bench",
                                   "volumes": volumes_json(run, node, volumes, grown)}});
    let name = volpool_api::local_pv_name(run, node, "vol00", &format!("uuid:{node}-0"));
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let started = Instant::now();
    reports
        .patch_status(node, &agent, &Patch::Apply(&status))
        .await?;
    loop {
        let pv = pvs.get(&name).await?;
        let capacity = pv
            .spec
            .and_then(|s| s.capacity?.get("storage").cloned())
            .map(|q| q.0)
            .unwrap_or_default();
        if volpool_api::units::parse_bytes(&capacity).ok() == Some(grown) {
            return Ok((node.to_string(), started.elapsed().as_secs_f64()));
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("PV {name} not grown after a minute");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A node's volumes as its agent reports them; the first one `first_bytes` large.
fn volumes_json(run: &str, node: &str, volumes: usize, first_bytes: u64) -> Vec<serde_json::Value> {
    (0..volumes)
        .map(|v| {
            let bytes = if v == 0 {
                first_bytes
            } else {
                (10u64 << 30) + v as u64
            };
            json!({"pool": run, "volumeID": format!("uuid:{node}-{v}"),
                   "path": format!("/mnt/disks/vol{v:02}"), "volumeMode": "Filesystem",
                   "fsType": "ext4", "capacityBytes": bytes, "state": "Ready"})
        })
        .collect()
}
