//! The limits part of the daemon: read the limits every `--resync` and whenever a Pod on this
//! node changes, name the containers from the Pods (watched with a `spec.nodeName` field
//! selector), keep the metrics text and `status.limits`, and record an Event on a Pod when one
//! of its requirements becomes unmet (once per container and requirement, not every scan).
//!
//! ```text
//!  Pods (spec.nodeName=<node>) ─┐                              ┌─► LimitsState (metrics text, status.limits) ─► rescan
//!  resync timer ────────────────┴─► collect ─► name_and_check ─┤
//!                                                              └─► Event on the Pod (newly unmet requirement)
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::Notify;
use volpool_api::events::Notice;

use super::{ContainerFacts, Report, RequirementResult, collect, metrics, pods};
use crate::cluster::{record_event, spawn_reflector};
use crate::context::Context;

/// Pod changes come in bursts (a StatefulSet rolling); wait this long before reading again.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// How long the first read waits for the Pods to be listed (names are filled in later anyway).
const PODS_WAIT: Duration = Duration::from_secs(10);

/// (pod UID, container ID, requirement): one unmet requirement of one container.
type Unmet = (String, String, String);

/// Run until the process ends.
pub async fn run(ctx: Arc<Context>) {
    let pods_changed = Arc::new(Notify::new());
    let pods = ctx.cluster.as_ref().map(|client| {
        let selector = format!("spec.nodeName={}", ctx.node);
        spawn_reflector(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields(&selector),
            pods_changed.clone(),
        )
    });
    if let Some(pods) = &pods {
        let _ = tokio::time::timeout(PODS_WAIT, pods.wait_until_ready()).await;
    }
    let mut unmet: HashSet<Unmet> = HashSet::new();
    loop {
        let reader = ctx.host.clone();
        match tokio::task::spawn_blocking(move || collect(reader.as_ref())).await {
            Ok(mut report) => {
                let snapshot = pods.as_ref().map(|p| p.state()).unwrap_or_default();
                pods::name_and_check(&mut report, snapshot.iter().map(|p| p.as_ref()));
                if ctx
                    .state
                    .limits
                    .set(metrics::render(&report), report.status())
                {
                    ctx.rescan.notify_one();
                }
                if let Some(client) = &ctx.cluster {
                    unmet = record_events(client, &ctx.node, &report, &unmet).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the limits failed"),
        }
        tokio::select! {
            _ = pods_changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(ctx.resync) => {}
        }
    }
}

/// Record an Event for each requirement unmet now but not at the last read; returns the
/// requirements unmet now (less those whose Event could not be recorded, to retry them).
async fn record_events(
    client: &Client,
    node: &str,
    report: &Report,
    before: &HashSet<Unmet>,
) -> HashSet<Unmet> {
    let mut now = HashSet::new();
    for c in report.containers.iter().filter(|c| !c.pod.is_empty()) {
        for r in c.requirements.iter().filter(|r| !r.met) {
            let key = (
                c.pod_uid.clone(),
                c.container_id.clone(),
                r.requirement.clone(),
            );
            if !before.contains(&key) {
                if let Err(e) = event(client, node, c, r).await {
                    tracing::warn!(error = %e, pod = %c.pod, "cannot record the requirement Event");
                    continue;
                }
                tracing::info!(namespace = %c.namespace, pod = %c.pod, container = %c.container,
                    requirement = %r.requirement, "requirement not met");
            }
            now.insert(key);
        }
    }
    now
}

/// A Warning Event on the Pod, in its namespace, naming the fix.
async fn event(
    client: &Client,
    node: &str,
    c: &ContainerFacts,
    r: &RequirementResult,
) -> Result<(), kube::Error> {
    let field_path =
        (!c.container.is_empty()).then(|| format!("spec.containers{{{}}}", c.container));
    let notice = Notice {
        regarding: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(c.namespace.clone()),
            name: Some(c.pod.clone()),
            uid: Some(c.pod_uid.clone()),
            field_path,
            ..Default::default()
        },
        warning: true,
        reason: "RequirementNotMet".into(),
        action: "CheckLimits".into(),
        note: format!("container {}: {}", c.container, r.message),
    };
    record_event(client, node, notice).await
}
