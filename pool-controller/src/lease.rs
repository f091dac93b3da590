//! Leader election with a `coordination.k8s.io/v1` Lease: only the holder writes.
//!
//! ```text
//!  every `retry`: get Lease ─┬─ absent ─────────────────────► create (holder = me)
//!                            ├─ holder = me ────────────────► renew (replace, resourceVersion-checked)
//!                            ├─ unchanged for `duration` ───► take over (replace, transitions + 1)
//!                            └─ otherwise ──────────────────► follow
//! ```
//!
//! Expiry is judged by how long *this* replica has seen the Lease unchanged, not by comparing
//! clocks between replicas. A leader that could not renew for `duration - retry` steps down
//! before anyone else may take over. On shutdown the leader empties `holderIdentity`, so the
//! follower takes over at its next try.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::error::Error;

/// Which Lease, who we are and the timings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity.
    pub identity: String,
    /// How long an unrenewed Lease stays held.
    pub duration: Duration,
    /// How often to renew or try.
    pub retry: Duration,
}

struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    seen: Option<(String, Instant)>,
    renewed: Option<Instant>,
}

/// Start electing; the receiver says whether this replica leads. `shutdown` releases the Lease.
pub fn spawn(
    client: Client,
    config: LeaseConfig,
    mut shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let mut elector = Elector {
        api: Api::namespaced(client, &config.namespace),
        config,
        seen: None,
        renewed: None,
    };
    let task = tokio::spawn(async move {
        loop {
            let leading = match elector.round().await {
                Ok(leading) => leading,
                Err(e) => {
                    tracing::warn!(error = %e, "lease round failed");
                    // NB: keep leading only while the last renewal is surely still valid.
                    elector.renewed.is_some_and(|t| {
                        t.elapsed() + elector.config.retry < elector.config.duration
                    })
                }
            };
            if !leading {
                elector.renewed = None;
            }
            if *tx.borrow() != leading {
                tracing::info!(leading, identity = %elector.config.identity, "leadership changed");
                tx.send_replace(leading);
            }
            tokio::select! {
                _ = tokio::time::sleep(elector.config.retry) => {}
                _ = shutdown.changed() => {
                    if *tx.borrow() {
                        tx.send_replace(false);
                        elector.release().await;
                    }
                    return;
                }
            }
        }
    });
    (rx, task)
}

impl Elector {
    fn error(&self, source: kube::Error) -> Error {
        Error::Lease {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source,
        }
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(
                self.config
                    .duration
                    .as_secs()
                    .try_into()
                    .unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    async fn round(&mut self) -> Result<bool, Error> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.renewed = Some(Instant::now());
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let mine = holder == self.config.identity;
        if !mine {
            if self.seen.as_ref().is_none_or(|(v, _)| *v != version) {
                self.seen = Some((version, Instant::now()));
            }
            let held_for = Duration::from_secs(
                spec.lease_duration_seconds
                    .unwrap_or(15)
                    .max(1)
                    .unsigned_abs()
                    .into(),
            );
            let expired = self
                .seen
                .as_ref()
                .is_some_and(|(_, since)| since.elapsed() >= held_for);
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
        }
        let acquire = if mine {
            spec.acquire_time.clone()
        } else {
            None
        };
        lease.spec = Some(self.spec(acquire, if mine { transitions } else { transitions + 1 }));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.renewed = Some(Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn release(&mut self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() == Some(self.config.identity.as_str()) {
                spec.holder_identity = None;
                if let Err(e) = self
                    .api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
                {
                    tracing::warn!(error = %e, "failed to release the lease");
                }
            }
        }
    }
}
