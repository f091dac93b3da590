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
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};
use volpool_api::{NodeVolumesStatus, VolumePool};

use crate::cleanup;
use crate::error::{Error, Result};
use crate::host::{Host, RealHost};
use crate::http::{self, AgentState};
use crate::limits;
use crate::nfs;
use crate::pools::{self, LocalPool};
use crate::probe::{ProbeConfig, Prober};
use crate::publish::publisher;
use crate::scan::{Scan, scan};
use crate::watch::watch_mounts;

/// Mount events often come in bursts (a script mounting many disks); wait this long for the
/// burst to end before scanning.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// How long the first scan waits for the scrub results already recorded in NodeVolumes.
const CLEANUPS_READY: Duration = Duration::from_secs(10);

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
}

/// The status the agent publishes for a scan.
pub fn status_of(host: &dyn Host, scan: &Scan) -> NodeVolumesStatus {
    NodeVolumesStatus {
        machine_id: host
            .read_to_string(std::path::Path::new("/etc/machine-id"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        volumes: scan.volumes.clone(),
        ..NodeVolumesStatus::default()
    }
}

/// A prober that runs statvfs on `host`.
pub fn prober(host: Arc<RealHost>, config: ProbeConfig) -> Prober {
    Prober::new(config, Arc::new(move |p: &std::path::Path| host.statvfs(p)))
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
}

/// Run until killed.
pub async fn run(config: RunConfig) -> Result<()> {
    let host = Arc::new(RealHost::new(&config.host_root));
    let prober = prober(host.clone(), config.probe);
    let trigger = Arc::new(Notify::new());
    let standalone = config.pools_file.is_some();
    let state = AgentState::new(!standalone);
    let addr = config.metrics_addr.clone();
    let http_state = state.clone();
    let server = tokio::spawn(async move { http::serve(&addr, http_state).await });
    if let Err(e) = watch_mounts(&host.mount_table_path(), trigger.clone()) {
        tracing::error!(error = %e, "mount changes are noticed only at each --resync");
    }

    let (desired_tx, desired_rx) = watch::channel(None);
    let cleanups = cleanup::daemon::Results::default();
    let mut nfs_client = None;
    let pools = match &config.pools_file {
        Some(file) => Pools::File(pools::read_pools_file(file)?),
        None => {
            let client = Client::try_default().await.map_err(Error::ConnectCluster)?;
            nfs_client = Some(client.clone());
            let pools = spawn_reflector(
                Api::<VolumePool>::all(client.clone()),
                watcher::Config::default(),
                trigger.clone(),
            );
            let node = spawn_reflector(
                Api::<Node>::all(client.clone()),
                watcher::Config::default().fields(&format!("metadata.name={}", config.node)),
                trigger.clone(),
            );
            tokio::spawn(publisher(
                client,
                config.node.clone(),
                desired_rx,
                state.clone(),
                config.resync,
            ));
            // NB: scanning before the pools are known would publish an empty report.
            let _ = pools.wait_until_ready().await;
            let _ = node.wait_until_ready().await;
            Pools::Cluster {
                pools,
                node,
                name: config.node.clone(),
            }
        }
    };
    let pools = Arc::new(pools);
    if let Some(client) = nfs_client.clone() {
        let current = pools.clone();
        let cleaner = cleanup::daemon::Cleaner {
            host: host.clone(),
            host_root: config.host_root.clone(),
            pools: Arc::new(move || current.current()),
            results: cleanups.clone(),
            desired: desired_tx.clone(),
        };
        tokio::spawn(cleanup::daemon::run(client, config.node.clone(), cleaner));
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
        host_root: config.host_root.clone(),
        node: config.node.clone(),
        install: config.install_nfs_client,
        config: nfs::NfsConfig::default(),
        resync: config.resync,
    };
    let limits_loop = limits::daemon::LimitsLoop {
        host_root: config.host_root.clone(),
        node: config.node.clone(),
        resync: config.resync,
    };
    tokio::spawn(limits::daemon::run(
        limits_loop,
        state.clone(),
        nfs_client.clone(),
        trigger.clone(),
    ));
    tokio::spawn(nfs::daemon::run(
        nfs_loop,
        nfs_rx,
        state.clone(),
        nfs_client,
        trigger.clone(),
    ));
    loop {
        if server.is_finished() {
            return match server.await {
                Ok(result) => result,
                Err(e) => Err(Error::ScanTask(e.to_string())),
            };
        }
        let selected = pools.current();
        let nfs_pools = pools.nfs();
        nfs_tx.send_if_modified(|old| {
            let changed = *old != nfs_pools;
            *old = nfs_pools;
            changed
        });
        let (scan_host, scan_prober, node) = (host.clone(), prober.clone(), config.node.clone());
        let result = tokio::task::spawn_blocking(move || {
            scan(scan_host.as_ref(), &scan_prober, &selected, &node)
        })
        .await
        .map_err(|e| Error::ScanTask(e.to_string()))?;
        match result {
            Ok(scan) => {
                for problem in &scan.problems {
                    tracing::warn!(%problem, "pool not scanned");
                }
                tracing::debug!(duration = ?scan.duration, volumes = scan.volumes.len(), "scan done");
                let mut status = status_of(host.as_ref(), &scan);
                status.nfs_client = state.nfs.get();
                status.limits = state.limits.status();
                state.set_scan(&scan);
                desired_tx.send_if_modified(|old| {
                    status.cleanups = cleanups.list();
                    let changed = old.as_ref() != Some(&status);
                    *old = Some(status);
                    changed
                });
            }
            Err(e) => tracing::error!(error = %e, category = e.category(), "scan failed"),
        }
        tokio::select! {
            _ = trigger.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(config.resync) => {}
        }
    }
}

/// A reflector store of `api`, kept up to date on a task; `trigger` is notified on each event.
pub fn spawn_reflector<K>(api: Api<K>, config: watcher::Config, trigger: Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => trigger.notify_one(),
                Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
            }
        }
    });
    reader
}
