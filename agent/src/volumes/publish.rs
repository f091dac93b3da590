//! Publishing `NodeVolumes/<node>`: server-side apply (field manager `volpool-agent`), an
//! ownerReference to the Node, and a write only when the status differs from what the API
//! holds. Errors are retried with backoff; the agent never exits over them.
//!
//! ```text
//!  scan loop ──watch<status>──► publisher ──GET (compare)──► apply metadata + /status (only on change)
//!                                   ▲ resync: forget what was written, compare again (no write if equal)
//! ```

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use volpool_api::{
    FIELD_MANAGER_AGENT, LABEL_MANAGED_BY, MANAGED_BY, NodeVolumes, NodeVolumesStatus,
};

use crate::error::{Error, Result};
use crate::state::AgentState;

const MAX_BACKOFF: Duration = Duration::from_secs(16);

/// Publish every status sent on `desired`, until the sender is dropped.
pub async fn publisher(
    client: Client,
    node: String,
    mut desired: watch::Receiver<Option<NodeVolumesStatus>>,
    state: Arc<AgentState>,
    resync: Duration,
) {
    let mut last: Option<NodeVolumesStatus> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let status = desired.borrow_and_update().clone();
        if let Some(status) = status {
            match publish_once(&client, &node, status, &mut last).await {
                Ok(wrote) => {
                    if wrote {
                        tracing::info!(%node, "published NodeVolumes");
                    }
                    state.set_published();
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    tracing::warn!(error = %e, category = e.category(), retry_in = ?backoff, "publish failed");
                    // NB: a new status (say, after the Node or a mount appeared) retries at once.
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        changed = desired.changed() => if changed.is_err() { return },
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(resync) => last = None,
        }
    }
}

/// Make the API hold `status`. Returns whether anything was written.
async fn publish_once(
    client: &Client,
    node: &str,
    mut status: NodeVolumesStatus,
    last: &mut Option<NodeVolumesStatus>,
) -> Result<bool> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node_obj = nodes
        .get_opt(node)
        .await
        .map_err(|source| Error::GetNode {
            node: node.into(),
            source,
        })?
        .ok_or_else(|| Error::NoSuchNode { node: node.into() })?;
    let uid = node_obj.metadata.uid.unwrap_or_default();
    status.node_uid = uid.clone();
    if last.as_ref() == Some(&status) {
        return Ok(false);
    }
    let api: Api<NodeVolumes> = Api::all(client.clone());
    let publish_err = |source| Error::PublishNodeVolumes {
        node: node.into(),
        source,
    };
    let current = api.get_opt(node).await.map_err(publish_err)?;
    let owned = current.as_ref().is_some_and(|nv| {
        nv.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.kind == "Node")
    });
    if owned && current.as_ref().and_then(|nv| nv.status.as_ref()) == Some(&status) {
        *last = Some(status);
        return Ok(false);
    }
    let params = PatchParams::apply(FIELD_MANAGER_AGENT).force();
    if !owned {
        let object = json!({
            "apiVersion": "volpool.io/v1alpha1",
            "kind": "NodeVolumes",
            "metadata": {
                "name": node,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}],
            },
            // NB: the schema requires spec; an empty one claims none of the controller's fields.
            "spec": {},
        });
        api.patch(node, &params, &Patch::Apply(&object))
            .await
            .map_err(publish_err)?;
    }
    let object = json!({
        "apiVersion": "volpool.io/v1alpha1",
        "kind": "NodeVolumes",
        "metadata": {"name": node},
        "status": status,
    });
    api.patch_status(node, &params, &Patch::Apply(&object))
        .await
        .map_err(publish_err)?;
    *last = Some(status);
    Ok(true)
}
