//! The NFS part of the daemon: evaluate the checks and server probes whenever this node's NFS
//! pools change and every resync; install the client when allowed and missing; keep the node
//! label `volpool.io/nfs-client=ready|missing` true, patching it only when it changes.
//!
//! ```text
//!  watch<[NfsPool]> ─┐                         ┌─► NfsState (metrics, NodeVolumes.status.nfsClient) ─► rescan
//!  resync timer ─────┴─► evaluate (─► install) ─┼─► Node label (server-side apply, only on change)
//!                                               └─► Event on the Node (install output)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use volpool_api::events::Notice;
use volpool_api::{FIELD_MANAGER_AGENT, LABEL_NFS_CLIENT, NFS_CLIENT_MISSING, NFS_CLIENT_READY};

use super::{NfsConfig, NfsPool, evaluate, install, missing};
use crate::cluster::record_event;
use crate::context::Context;

/// After a failed install, wait this long before trying again.
const INSTALL_RETRY: Duration = Duration::from_secs(30 * 60);

/// What the NFS loop needs besides the [`Context`].
pub struct NfsLoop {
    /// `--install-nfs-client`.
    pub install: bool,
    /// Deadline of each install command (`--install-timeout`).
    pub install_timeout: Duration,
    /// Network deadlines.
    pub config: NfsConfig,
}

/// Run until `pools`' sender is dropped.
pub async fn run(ctx: Arc<Context>, params: NfsLoop, mut pools: watch::Receiver<Vec<NfsPool>>) {
    let host = ctx.host.as_ref();
    let mut last_install: Option<Instant> = None;
    let mut label: Option<&'static str> = None;
    loop {
        let current = pools.borrow_and_update().clone();
        let mut status = evaluate(host, &current, params.config).await;
        let due = last_install.is_none_or(|t| t.elapsed() >= INSTALL_RETRY);
        if params.install && missing(&status) && due {
            last_install = Some(Instant::now());
            let (warning, reason, note) = match install::install(host, params.install_timeout).await
            {
                Ok(steps) => {
                    status = evaluate(host, &current, params.config).await;
                    let output = steps.last().map(|s| s.output.as_str()).unwrap_or_default();
                    (false, "NfsClientInstalled", output.to_string())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "installing the nfs client failed");
                    (true, "NfsClientInstallFailed", e.to_string())
                }
            };
            if let Some(client) = &ctx.cluster {
                event(client, &ctx.node, warning, reason, note).await;
            }
        }
        let value = if status.ready {
            NFS_CLIENT_READY
        } else {
            NFS_CLIENT_MISSING
        };
        if ctx.state.nfs.set(status) {
            ctx.rescan.notify_one();
        }
        if let Some(client) = &ctx.cluster
            && label != Some(value)
        {
            match set_label(client, &ctx.node, value).await {
                Ok(()) => label = Some(value),
                Err(e) => tracing::warn!(error = %e, "cannot label the node {LABEL_NFS_CLIENT}"),
            }
        }
        tokio::select! {
            changed = pools.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(ctx.resync) => {}
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

/// An Event on the Node about an install.
async fn event(client: &Client, node: &str, warning: bool, reason: &str, note: String) {
    let notice = Notice {
        regarding: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        },
        warning,
        reason: reason.into(),
        action: "InstallNfsClient".into(),
        note,
    };
    if let Err(e) = record_event(client, node, notice).await {
        tracing::warn!(error = %e, "cannot record the install Event");
    }
}
