//! Carry out a plan: server-side apply (field manager `volpool-controller`) of PV updates, of
//! NodeVolumes `spec.cleanups` and of VolumePool `/status`; new PVs by a plain create; PV
//! deletions with a UID precondition; Events through events.k8s.io/v1.
//!
//! ```text
//!  [Change] ──► deletions ──► PV creates / applies ──► cleanups ──► statuses ──► Events
//!               (each phase runs `concurrency` requests at a time)
//! ```
//!
//! A failed write is counted and logged, the others go on; the next pass plans it again.
//!
//! Why new PVs are created, not applied: on a 1.20 apiserver a server-side apply costs about
//! twice the CPU of a create (`BENCHMARKS.md`, "Controller scale"), and creating 10,000 PVs is
//! bound by the apiserver's CPU. A create records the controller's fields under an `Update`
//! entry of `managedFields`, which would keep a later apply from removing a field it stops
//! sending; so the first update of such a PV hands them over (see [`handover`]) and from then
//! on the PV is owned exactly as if it had been applied.

use std::sync::Arc;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;
use volpool_api::{FIELD_MANAGER_CONTROLLER, NodeVolumes, VolumePool, events};

use crate::error::Error;
use crate::metrics::Metrics;
use crate::plan::{Change, Notice};
use crate::world::{Written, WrittenKind};

/// Makes the writes.
pub struct Applier {
    client: Client,
    instance: String,
    metrics: Arc<Metrics>,
    concurrency: usize,
}

/// What a pass wrote.
#[derive(Default)]
pub struct Applied {
    /// Objects written, to wait for in the stores.
    pub written: Vec<Written>,
    /// Writes that failed.
    pub failed: usize,
}

impl Applier {
    /// An applier; `instance` names this replica in Events.
    pub fn new(
        client: Client,
        instance: String,
        metrics: Arc<Metrics>,
        concurrency: usize,
    ) -> Applier {
        Applier {
            instance,
            client,
            metrics,
            concurrency: concurrency.max(1),
        }
    }

    /// Apply every change, phase by phase.
    pub async fn apply(&self, changes: Vec<Change>) -> Applied {
        let mut phases: [Vec<Change>; 5] = Default::default();
        for change in changes {
            let phase = match change {
                Change::DeletePv { .. } => 0,
                Change::CreatePv { .. } | Change::UpdatePv { .. } | Change::ApplyNfsPv { .. } => 1,
                Change::SetCleanups { .. } => 2,
                Change::PoolStatus { .. } => 3,
                Change::Event(_) => 4,
            };
            phases[phase].push(change);
        }
        let mut applied = Applied::default();
        for phase in phases {
            let results: Vec<Result<Option<Written>, Error>> = stream::iter(phase)
                .map(|c| self.one(c))
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            for result in results {
                match result {
                    Ok(Some(w)) => applied.written.push(w),
                    Ok(None) => {}
                    Err(e) => {
                        applied.failed += 1;
                        self.metrics.error(&e);
                        tracing::warn!(error = %e, "write failed; the next pass retries");
                    }
                }
            }
        }
        applied
    }

    async fn one(&self, change: Change) -> Result<Option<Written>, Error> {
        let apply = PatchParams::apply(FIELD_MANAGER_CONTROLLER).force();
        match change {
            Change::CreatePv { pv } => self.create_pv(pv.to_pv()).await,
            Change::ApplyNfsPv {
                pv,
                resource_version,
                ..
            } => self.apply_pv(pv.to_pv(), resource_version).await,
            Change::UpdatePv {
                pv,
                resource_version,
                ..
            } => self.apply_pv(pv.to_pv(), resource_version).await,
            Change::DeletePv {
                name,
                uid,
                pool,
                reason,
                scrub_seconds,
            } => {
                let api: Api<PersistentVolume> = Api::all(self.client.clone());
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                tracing::info!(pv = %name, %reason, "deleting PersistentVolume");
                let result = api.delete(&name, &params).await;
                self.metrics.write("delete", "persistentvolumes");
                match result {
                    Ok(_) => {}
                    // NB: already gone, or a newer PV of that name (UID precondition): done.
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(source) => return Err(Error::DeletePv { name, source }),
                }
                if let Some(seconds) = scrub_seconds {
                    self.metrics.cleanup(&pool, "succeeded", seconds);
                }
                Ok(Some(Written {
                    kind: WrittenKind::Pv,
                    name,
                    resource_version: None,
                }))
            }
            Change::SetCleanups {
                node,
                resource_version,
                cleanups,
            } => {
                let api: Api<NodeVolumes> = Api::all(self.client.clone());
                let mut body = json!({
                    "apiVersion": "volpool.io/v1alpha1",
                    "kind": "NodeVolumes",
                    "metadata": {"name": node},
                    "spec": {"cleanups": cleanups},
                });
                if let Some(rv) = resource_version {
                    body["metadata"]["resourceVersion"] = json!(rv);
                }
                let result = api.patch(&node, &apply, &Patch::Apply(&body)).await;
                self.metrics.write("apply", "nodevolumes");
                let written = result.map_err(|source| Error::SetCleanups {
                    node: node.clone(),
                    source,
                })?;
                Ok(Some(Written {
                    kind: WrittenKind::Report,
                    name: node,
                    resource_version: written.metadata.resource_version,
                }))
            }
            Change::PoolStatus { pool, status } => {
                let api: Api<VolumePool> = Api::all(self.client.clone());
                let body = json!({
                    "apiVersion": "volpool.io/v1alpha1",
                    "kind": "VolumePool",
                    "status": status,
                });
                let result = api.patch_status(&pool, &apply, &Patch::Apply(&body)).await;
                self.metrics.write("apply", "volumepools/status");
                let written = result.map_err(|source| Error::WriteStatus {
                    pool: pool.clone(),
                    source,
                })?;
                Ok(Some(Written {
                    kind: WrittenKind::Pool,
                    name: pool,
                    resource_version: written.metadata.resource_version,
                }))
            }
            Change::Event(notice) => {
                self.publish(notice).await?;
                Ok(None)
            }
        }
    }

    async fn create_pv(&self, pv: PersistentVolume) -> Result<Option<Written>, Error> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER_CONTROLLER.into()),
            ..Default::default()
        };
        let result = api.create(&params, &pv).await;
        self.metrics.write("create", "persistentvolumes");
        match result {
            Ok(created) => Ok(Some(Written {
                kind: WrittenKind::Pv,
                name,
                resource_version: created.metadata.resource_version,
            })),
            // NB: a PV of that name appeared since the stores were read: apply it, as before
            // creates were plain.
            Err(kube::Error::Api(s)) if s.code == 409 => self.apply_pv(pv, None).await,
            Err(source) => Err(Error::ApplyPv { name, source }),
        }
    }

    /// Server-side apply `pv`, at `resource_version` when given (so a stale plan conflicts).
    async fn apply_pv(
        &self,
        mut pv: PersistentVolume,
        resource_version: Option<String>,
    ) -> Result<Option<Written>, Error> {
        pv.metadata.resource_version = resource_version;
        let name = pv.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let apply = PatchParams::apply(FIELD_MANAGER_CONTROLLER).force();
        let result = api.patch(&name, &apply, &Patch::Apply(&pv)).await;
        self.metrics.write("apply", "persistentvolumes");
        let mut written = result.map_err(|source| Error::ApplyPv {
            name: name.clone(),
            source,
        })?;
        if let Some(patch) = handover(&written, &pv) {
            let result = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            self.metrics.write("patch", "persistentvolumes");
            written = result.map_err(|source| Error::ApplyPv {
                name: name.clone(),
                source,
            })?;
        }
        Ok(Some(Written {
            kind: WrittenKind::Pv,
            name,
            resource_version: written.metadata.resource_version,
        }))
    }

    async fn publish(&self, notice: Notice) -> Result<(), Error> {
        let reason = notice.reason.clone();
        let reporter = events::Reporter {
            controller: events::REPORTING_CONTROLLER,
            instance: &self.instance,
        };
        let namespace = events::event_namespace(&notice.regarding);
        let event = events::event(notice, reporter, Timestamp::now());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let result = api.create(&PostParams::default(), &event).await;
        self.metrics.write("create", "events");
        result
            .map(|_| ())
            .map_err(|source| Error::PublishEvent { reason, source })
    }
}

/// After an apply to a PV that was created (not applied): a merge patch that drops the
/// controller's `Update` entry from `managedFields` (the apply just took every field it sent)
/// and removes what that entry owned and the apply no longer sends (a pool label or mount
/// option removed since the create), so the PV ends as if it had always been applied.
/// `None` when there is no such entry.
fn handover(written: &PersistentVolume, sent: &PersistentVolume) -> Option<serde_json::Value> {
    let entries = written
        .metadata
        .managed_fields
        .as_deref()
        .unwrap_or_default();
    let ours = |e: &ManagedFieldsEntry| {
        e.manager.as_deref() == Some(FIELD_MANAGER_CONTROLLER)
            && e.operation.as_deref() == Some("Update")
    };
    let created = entries.iter().find(|e| ours(e))?;
    let owned = created.fields_v1.as_ref().map(|f| &f.0);
    let keys = |map: &str| -> Vec<String> {
        owned
            .and_then(|o| o.get("f:metadata")?.get(map)?.as_object())
            .map(|m| {
                m.keys()
                    .filter_map(|k| k.strip_prefix("f:"))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut patch = json!({"metadata": {
        "resourceVersion": written.metadata.resource_version,
        "managedFields": entries.iter().filter(|e| !ours(e)).collect::<Vec<_>>(),
    }});
    for (map, sent_map) in [
        ("labels", sent.metadata.labels.as_ref()),
        ("annotations", sent.metadata.annotations.as_ref()),
    ] {
        for key in keys(&format!("f:{map}")) {
            if !sent_map.is_some_and(|m| m.contains_key(&key)) {
                patch["metadata"][map][key] = serde_json::Value::Null;
            }
        }
    }
    let sent_options = sent.spec.as_ref().and_then(|s| s.mount_options.as_ref());
    if owned
        .and_then(|o| o.get("f:spec")?.get("f:mountOptions"))
        .is_some()
        && sent_options.is_none()
    {
        patch["spec"] = json!({"mountOptions": null});
    }
    Some(patch)
}
