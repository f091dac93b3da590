//! The steady load the faults land on: NFS claims created and deleted, a StatefulSet on the
//! local pool scaled up and down, and the claims of its scaled-down replicas deleted now and
//! then (so volumes are released and scrubbed while faults happen). One action per call,
//! chosen by the load's own random stream; an action the cluster refuses (an apiserver down)
//! is counted and skipped.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::bed::Bed;
use super::rng::Rng;
use crate::FIELD_MANAGER;

/// Most NFS claims alive at once.
const MAX_CLAIMS: usize = 5;
/// Most StatefulSet replicas (the nodes have 3 disks each).
const MAX_REPLICAS: usize = 4;
/// The StatefulSet's name (its claims are `data-sts-<i>`).
const STS: &str = "sts";

/// The load generator.
pub struct Load {
    rng: Rng,
    next_claim: u32,
    /// Actions done, by kind, and the refused ones under `failed`.
    pub done: BTreeMap<&'static str, u32>,
}

impl Load {
    /// A load for `seed`.
    pub fn new(seed: u64) -> Load {
        Load {
            rng: Rng::new(seed, 2),
            next_claim: 0,
            done: BTreeMap::new(),
        }
    }

    /// One action; what it was.
    pub async fn step(&mut self, bed: &Bed) -> &'static str {
        let kind = match self.rng.below(10) {
            0..=3 => "create claim",
            4..=5 => "delete claim",
            6..=8 => "scale statefulset",
            _ => "delete claims of removed replicas",
        };
        let result = match kind {
            "create claim" => self.create_claim(bed).await,
            "delete claim" => self.delete_claim(bed).await,
            "scale statefulset" => self.scale(bed).await,
            _ => self.delete_removed(bed).await,
        };
        let key = match result {
            Ok(true) => kind,
            Ok(false) => "nothing to do",
            Err(e) => {
                println!("chaos: load: {kind} refused: {e:#}");
                "refused"
            }
        };
        *self.done.entry(key).or_default() += 1;
        key
    }

    async fn claims(&self, bed: &Bed) -> anyhow::Result<Vec<PersistentVolumeClaim>> {
        let api = Api::<PersistentVolumeClaim>::namespaced(bed.client.clone(), &bed.test);
        Ok(api.list(&ListParams::default()).await?.items)
    }

    async fn create_claim(&mut self, bed: &Bed) -> anyhow::Result<bool> {
        let live = self.claims(bed).await?;
        let nfs = live.iter().filter(|c| name(c).starts_with("c-")).count();
        if nfs >= MAX_CLAIMS {
            return Ok(false);
        }
        let name = format!("c-{}", self.next_claim);
        self.next_claim += 1;
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"storageClassName": bed.nfs_pool(), "accessModes": ["ReadWriteMany"],
                     "resources": {"requests": {"storage": "1Mi"}}}});
        Api::<PersistentVolumeClaim>::namespaced(bed.client.clone(), &bed.test)
            .create(&PostParams::default(), &serde_json::from_value(pvc)?)
            .await?;
        Ok(true)
    }

    async fn delete_claim(&mut self, bed: &Bed) -> anyhow::Result<bool> {
        let live: Vec<String> = self
            .claims(bed)
            .await?
            .iter()
            .map(name)
            .filter(|n| n.starts_with("c-"))
            .collect();
        if live.is_empty() {
            return Ok(false);
        }
        let victim = &live[self.rng.below(live.len())];
        Api::<PersistentVolumeClaim>::namespaced(bed.client.clone(), &bed.test)
            .delete(victim, &DeleteParams::default())
            .await?;
        Ok(true)
    }

    async fn scale(&mut self, bed: &Bed) -> anyhow::Result<bool> {
        let replicas = self.rng.below(MAX_REPLICAS + 1);
        // NB: no kubelet runs on the fake nodes: a grace period of 0 lets the scale-down
        // delete its pods at once instead of waiting for a kubelet to confirm.
        let sts = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": STS},
            "spec": {
                "serviceName": STS, "replicas": replicas, "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": STS}},
                "template": {
                    "metadata": {"labels": {"app": STS}},
                    "spec": {
                        "automountServiceAccountToken": false,
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "app", "image": "example.invalid/app:1",
                                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                    },
                },
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                    "storageClassName": bed.local_pool(), "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Mi"}}}}],
            },
        });
        Api::<StatefulSet>::namespaced(bed.client.clone(), &bed.test)
            .patch(
                STS,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&sts),
            )
            .await?;
        Ok(true)
    }

    async fn delete_removed(&mut self, bed: &Bed) -> anyhow::Result<bool> {
        let sts = Api::<StatefulSet>::namespaced(bed.client.clone(), &bed.test)
            .get_opt(STS)
            .await?;
        let replicas = sts.and_then(|s| s.spec.replicas).unwrap_or(0);
        let api = Api::<PersistentVolumeClaim>::namespaced(bed.client.clone(), &bed.test);
        let mut deleted = false;
        for claim in self.claims(bed).await? {
            let ordinal = name(&claim)
                .strip_prefix(&format!("data-{STS}-"))
                .and_then(|i| i.parse::<i32>().ok());
            if ordinal.is_some_and(|i| i >= replicas) && claim.metadata.deletion_timestamp.is_none()
            {
                api.delete(&name(&claim), &DeleteParams::default()).await?;
                deleted = true;
            }
        }
        Ok(deleted)
    }
}

fn name(claim: &PersistentVolumeClaim) -> String {
    claim.metadata.name.clone().unwrap_or_default()
}
