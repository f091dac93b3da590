//! The daemon: scan on every mount change and every `--resync`, keep the latest scan for
//! `/metrics`, and hand its status to the publisher.
//!
//! ```text
//!  mount events ─┐                                      ┌─► AgentState (metrics, readiness)
//!  pool/node watch ─┼─► Notify ─► scan (blocking thread) ─┤
//!  resync timer ─┘                                      └─► watch<status> ─► publisher ─► NodeVolumes
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::network::{self, apiserver::Paths, checks::NodeCidr};
use tokio::signal::unix::SignalKind;
use tokio::sync::{Notify, watch};
use volpool_api::{NodeVolumesStatus, VolumePool};

use crate::cleanup;
use crate::cluster::spawn_reflector;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::host::{Host, RealHost};
use crate::http;
use crate::limits;
use crate::metrics;
use crate::nfs;
use crate::pools::{self, LocalPool};
use crate::state::AgentState;
use crate::volumes::probe::{ProbeConfig, Prober};
use crate::volumes::publish::publisher;
use crate::volumes::scan::scan;
use crate::volumes::watch::watch_mounts;
use crate::volumes::{prober, status_of};

/// Mount events often come in bursts (a script mounting many disks); wait this long for the
/// burst to end before scanning.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// How long the first scan waits for the scrub results already recorded in NodeVolumes.
const CLEANUPS_READY: Duration = Duration::from_secs(10);

/// How long the first scan waits for the first round of network checks.
const NETWORK_READY: Duration = Duration::from_secs(20);

/// Everything the daemon needs.
pub struct RunConfig {
    /// Where the node's root is.
    pub host_root: PathBuf,
    /// This node (required in a cluster).
    pub node: String,
    /// Standalone: pools from this file, no cluster.
    pub pools_file: Option<PathBuf>,
    /// Listen address for HTTP.
    pub metrics_addr: String,
    /// Full rescan period.
    pub resync: Duration,
    /// Probe pool sizing and deadline.
    pub probe: ProbeConfig,
    /// Install the NFS client when it is missing (`--install-nfs-client`).
    pub install_nfs_client: bool,
    /// Deadline of each install command (`--install-timeout`).
    pub install_timeout: Duration,
    /// The network checks' configuration.
    pub network: network::NetworkConfig,
    /// How often the network checks run (`--network-interval`).
    pub network_interval: Duration,
}

enum Pools {
    File(Vec<VolumePool>),
    Cluster {
        pools: Store<VolumePool>,
        node: Store<Node>,
        name: String,
    },
}

impl Pools {
    /// Every pool and this node's labels (`None` standalone: every pool applies).
    fn snapshot(&self) -> (Vec<VolumePool>, Option<BTreeMap<String, String>>) {
        match self {
            Pools::File(pools) => (pools.clone(), None),
            Pools::Cluster { pools, node, name } => {
                let labels = node
                    .get(&reflector::ObjectRef::new(name))
                    .and_then(|n| n.metadata.labels.clone())
                    .unwrap_or_default();
                let all = pools.state().iter().map(|p| (**p).clone()).collect();
                (all, Some(labels))
            }
        }
    }

    fn current(&self) -> Vec<LocalPool> {
        let (all, labels) = self.snapshot();
        pools::select(&all, labels.as_ref())
    }

    fn nfs(&self) -> Vec<nfs::NfsPool> {
        let (all, labels) = self.snapshot();
        nfs::select(&all, labels.as_ref())
    }

    /// This Node's `spec.podCIDR`, from the Node watch.
    fn pod_cidr(&self) -> NodeCidr {
        match self {
            Pools::File(_) => NodeCidr::Unknown("standalone: no Node is read".into()),
            Pools::Cluster { node, name, .. } => match node.get(&reflector::ObjectRef::new(name)) {
                Some(n) => NodeCidr::Known {
                    node: name.clone(),
                    pod_cidr: n
                        .spec
                        .as_ref()
                        .and_then(|s| s.pod_cidr.clone())
                        .unwrap_or_default(),
                },
                None => NodeCidr::Unknown(format!("no Node {name}")),
            },
        }
    }
}

/// Run until SIGTERM or SIGINT. NB: the handlers are what make the agent stop when it is PID 1
/// of its pid namespace (a container without `hostPID`): the kernel drops a signal that PID 1
/// has no handler for.
pub async fn run_until_stopped(config: RunConfig) -> Result<()> {
    let handler = |kind: SignalKind, signal: &'static str| {
        tokio::signal::unix::signal(kind)
            .map_err(|source| Error::InstallSignalHandler { signal, source })
    };
    let mut term = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut int = handler(SignalKind::interrupt(), "SIGINT")?;
    let signal = tokio::select! {
        result = run(config) => return result,
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal, "stopping");
    Ok(())
}

/// Run until the process ends.
async fn run(config: RunConfig) -> Result<()> {
    let standalone = config.pools_file.is_some();
    let state = AgentState::new(!standalone);
    let addr = config.metrics_addr.clone();
    let http_state = state.clone();
    let server = tokio::spawn(async move { http::serve(&addr, http_state).await });
    let host = Arc::new(RealHost::new(&config.host_root));
    let rescan = Arc::new(Notify::new());
    if let Err(e) = watch_mounts(&host.mount_table_path(), rescan.clone()) {
        tracing::error!(error = %e, "mount changes are noticed only at each --resync");
    }
    let (cluster, paths) = match standalone {
        true => (None, None),
        false => {
            let (client, paths) = Paths::connect().await.map_err(Error::ConnectCluster)?;
            (Some(client), Some(paths))
        }
    };
    let ctx = Arc::new(Context {
        node: config.node.clone(),
        host,
        resync: config.resync,
        cluster,
        state,
        rescan,
    });

    // NB: before the watches: when the Service does not answer, this loop finds the way around.
    let pod_cidr = Arc::new(OnceLock::new());
    let network_loop = network::daemon::NetworkLoop {
        config: config.network.clone(),
        interval: config.network_interval,
        pod_cidr: pod_cidr.clone(),
    };
    tokio::spawn(network::daemon::run(ctx.clone(), network_loop, paths));

    let (desired_tx, desired_rx) = watch::channel(None);
    let cleanups = cleanup::daemon::Results::default();
    let pools = Arc::new(match (&config.pools_file, &ctx.cluster) {
        (Some(file), _) => Pools::File(pools::read_pools_file(file)?),
        (None, Some(client)) => watch_pools(&ctx, client, desired_rx).await,
        // NB: not reached: without a pools file there is a cluster.
        (None, None) => Pools::File(Vec::new()),
    });
    let node_pools = pools.clone();
    let _ = pod_cidr.set(Box::new(move || node_pools.pod_cidr()) as network::daemon::PodCidr);
    // NB: the first report carries the network checks, so they do not cost a second write.
    let first_round = async {
        while ctx.state.network.get().is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(NETWORK_READY, first_round)
        .await
        .is_err()
    {
        tracing::warn!(
            "the network checks have not finished yet: the first report goes without them"
        );
    }
    if let Some(client) = ctx.cluster.clone() {
        let current = pools.clone();
        let cleaner = cleanup::daemon::Cleaner {
            pools: Arc::new(move || current.current()),
            results: cleanups.clone(),
            desired: desired_tx.clone(),
        };
        tokio::spawn(cleanup::daemon::run(ctx.clone(), client, cleaner));
        // NB: publishing before the recorded scrub results are known would drop them.
        if tokio::time::timeout(CLEANUPS_READY, cleanups.wait_ready())
            .await
            .is_err()
        {
            tracing::warn!("NodeVolumes cannot be watched yet: scrub requests wait for it");
        }
    }

    let (nfs_tx, nfs_rx) = watch::channel(pools.nfs());
    let nfs_loop = nfs::daemon::NfsLoop {
        install: config.install_nfs_client,
        install_timeout: config.install_timeout,
        config: nfs::NfsConfig::default(),
    };
    tokio::spawn(limits::daemon::run(ctx.clone()));
    tokio::spawn(nfs::daemon::run(ctx.clone(), nfs_loop, nfs_rx));
    let prober = prober(ctx.host.clone(), config.probe);
    loop {
        if server.is_finished() {
            return match server.await {
                Ok(result) => result,
                Err(e) => Err(Error::ServeHttpTask(e)),
            };
        }
        let nfs_pools = pools.nfs();
        nfs_tx.send_if_modified(|old| {
            let changed = *old != nfs_pools;
            *old = nfs_pools;
            changed
        });
        scan_once(&ctx, &prober, pools.current(), &cleanups, &desired_tx).await?;
        tokio::select! {
            _ = ctx.rescan.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(ctx.resync) => {}
        }
    }
}

/// Watch the VolumePools and this Node, start the publisher, and wait until both are listed.
async fn watch_pools(
    ctx: &Context,
    client: &Client,
    desired: watch::Receiver<Option<NodeVolumesStatus>>,
) -> Pools {
    let pools = spawn_reflector(
        Api::<VolumePool>::all(client.clone()),
        watcher::Config::default(),
        ctx.rescan.clone(),
    );
    let node = spawn_reflector(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={}", ctx.node)),
        ctx.rescan.clone(),
    );
    tokio::spawn(publisher(
        client.clone(),
        ctx.node.clone(),
        desired,
        ctx.state.clone(),
        ctx.resync,
    ));
    // NB: scanning before the pools are known would publish an empty report.
    let _ = pools.wait_until_ready().await;
    let _ = node.wait_until_ready().await;
    Pools::Cluster {
        pools,
        node,
        name: ctx.node.clone(),
    }
}

/// Scan `selected` once on a blocking thread; keep the metrics and hand the status (with the
/// NFS client, the limits and the scrub results) to the publisher. Fails only when the scan
/// task dies; a failed scan is logged.
async fn scan_once(
    ctx: &Context,
    prober: &Prober,
    selected: Vec<LocalPool>,
    cleanups: &cleanup::daemon::Results,
    desired: &watch::Sender<Option<NodeVolumesStatus>>,
) -> Result<()> {
    let (host, prober, node) = (ctx.host.clone(), prober.clone(), ctx.node.clone());
    let result =
        tokio::task::spawn_blocking(move || scan(host.as_ref(), &prober, &selected, &node))
            .await
            .map_err(|e| Error::ScanTask(e.to_string()))?;
    match result {
        Ok(scan) => {
            for problem in &scan.problems {
                tracing::warn!(%problem, "pool not scanned");
            }
            tracing::debug!(duration = ?scan.duration, volumes = scan.volumes.len(), "scan done");
            let mut status = status_of(ctx.host.as_ref(), &scan);
            status.nfs_client = ctx.state.nfs.get();
            status.limits = ctx.state.limits.status();
            status.network = ctx.state.network.get().map(|n| n.status);
            ctx.state.set_scan_text(metrics::render_scan(&scan));
            desired.send_if_modified(|old| {
                status.cleanups = cleanups.list();
                let changed = old.as_ref() != Some(&status);
                *old = Some(status);
                changed
            });
        }
        Err(e) => tracing::error!(error = %e, category = e.category(), "scan failed"),
    }
    Ok(())
}
