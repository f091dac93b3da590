//! The NFS part of the daemon: evaluate the checks and server probes whenever this node's NFS
//! pools change and every resync; install the client when allowed and missing; keep the node
//! label `volpool.io/nfs-client=ready|missing` true, patching it only when it changes.
//!
//! ```text
//!  watch<[NfsPool]> ─┐                         ┌─► NfsState (metrics, NodeVolumes.status.nfsClient) ─► rescan
//!  resync timer ─────┴─► evaluate (─► install) ─┼─► Node label (server-side apply, only on change)
//!                                               └─► Event on the Node (install output)
//! ```

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{Notify, watch};
use volpool_api::{
    FIELD_MANAGER_AGENT, LABEL_NFS_CLIENT, NFS_CLIENT_MISSING, NFS_CLIENT_READY, NfsClientStatus,
};

use super::cli::missing;
use super::{NfsConfig, NfsPool, evaluate, install};
use crate::host::RealHost;
use crate::http::AgentState;

/// After a failed install, wait this long before trying again.
const INSTALL_RETRY: Duration = Duration::from_secs(30 * 60);
/// Events hold at most 1 KiB of note.
const NOTE_MAX: usize = 1000;

/// The latest NFS client status, shared with `/metrics` and the publisher.
#[derive(Default)]
pub struct NfsState {
    status: RwLock<Option<NfsClientStatus>>,
}

impl NfsState {
    /// The latest status (`None` before the first evaluation).
    pub fn get(&self) -> Option<NfsClientStatus> {
        self.status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Store `status`; returns whether it changed.
    fn set(&self, status: NfsClientStatus) -> bool {
        let mut slot = self.status.write().unwrap_or_else(|e| e.into_inner());
        let changed = slot.as_ref() != Some(&status);
        *slot = Some(status);
        changed
    }
}

/// What the NFS loop needs.
pub struct NfsLoop {
    /// The node's root (for the installer's chroot).
    pub host_root: PathBuf,
    /// This node (label and Events); empty when standalone.
    pub node: String,
    /// `--install-nfs-client`.
    pub install: bool,
    /// Network deadlines.
    pub config: NfsConfig,
    /// Re-evaluate at least this often.
    pub resync: Duration,
}

/// Run until `pools`' sender is dropped.
pub async fn run(
    params: NfsLoop,
    mut pools: watch::Receiver<Vec<NfsPool>>,
    state: Arc<AgentState>,
    client: Option<Client>,
    rescan: Arc<Notify>,
) {
    let host = RealHost::new(&params.host_root);
    let mut last_install: Option<Instant> = None;
    let mut label: Option<&'static str> = None;
    loop {
        let current = pools.borrow_and_update().clone();
        let mut status = evaluate(&host, &current, params.config).await;
        let due = last_install.is_none_or(|t| t.elapsed() >= INSTALL_RETRY);
        if params.install && missing(&status) && due {
            last_install = Some(Instant::now());
            let (warning, reason, note) =
                match install::install(&params.host_root, &host, Duration::from_secs(600)).await {
                    Ok(steps) => {
                        status = evaluate(&host, &current, params.config).await;
                        let output = steps.last().map(|s| s.output.as_str()).unwrap_or_default();
                        (false, "NfsClientInstalled", output.to_string())
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "installing the nfs client failed");
                        (true, "NfsClientInstallFailed", e.to_string())
                    }
                };
            if let Some(client) = &client {
                event(client, &params.node, warning, reason, &note).await;
            }
        }
        let value = if status.ready {
            NFS_CLIENT_READY
        } else {
            NFS_CLIENT_MISSING
        };
        if state.nfs.set(status) {
            rescan.notify_one();
        }
        if let Some(client) = &client
            && label != Some(value)
        {
            match set_label(client, &params.node, value).await {
                Ok(()) => label = Some(value),
                Err(e) => tracing::warn!(error = %e, "cannot label the node {LABEL_NFS_CLIENT}"),
            }
        }
        tokio::select! {
            changed = pools.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(params.resync) => {}
        }
    }
}

/// Make the node's label say `value`; a write only when it says something else.
async fn set_label(client: &Client, node: &str, value: &str) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let current = nodes.get(node).await?;
    let labels = current.metadata.labels.unwrap_or_default();
    if labels.get(LABEL_NFS_CLIENT).map(String::as_str) == Some(value) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "labels": {LABEL_NFS_CLIENT: value}},
    });
    nodes
        .patch(
            node,
            &PatchParams::apply(FIELD_MANAGER_AGENT).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    tracing::info!(%node, label = LABEL_NFS_CLIENT, %value, "labelled the node");
    Ok(())
}

/// An Event on the Node about an install (in kube-system: a 1.20 apiserver takes Events about
/// cluster-scoped objects only there).
async fn event(client: &Client, node: &str, warning: bool, reason: &str, note: &str) {
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut note = note.trim().to_string();
    if note.len() > NOTE_MAX {
        let mut start = note.len() - NOTE_MAX;
        while !note.is_char_boundary(start) {
            start += 1;
        }
        note = note.split_off(start);
    }
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{node}.{:x}", now.as_nanosecond())),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        reason: Some(reason.into()),
        action: Some("InstallNfsClient".into()),
        note: Some(note),
        regarding: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        }),
        reporting_controller: Some("volpool.io/volpool-agent".into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), "kube-system");
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(error = %e, "cannot record the install Event");
    }
}
