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
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::Notify;
use volpool_api::NodeLimits;

use super::{ContainerFacts, Report, RequirementResult, collect, metrics, pods};
use crate::host::RealHost;
use crate::http::AgentState;
use crate::run::spawn_reflector;

/// Pod changes come in bursts (a StatefulSet rolling); wait this long before reading again.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// How long the first read waits for the Pods to be listed (names are filled in later anyway).
const PODS_WAIT: Duration = Duration::from_secs(10);
/// Events hold at most 1 KiB of note.
const NOTE_MAX: usize = 1000;

/// The latest limits, shared with `/metrics` and the publisher.
#[derive(Default)]
pub struct LimitsState {
    text: RwLock<Arc<String>>,
    status: RwLock<Option<NodeLimits>>,
}

impl LimitsState {
    /// The limits families as Prometheus text (empty before the first read).
    pub fn text(&self) -> Arc<String> {
        self.text.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What goes into `NodeVolumes.status.limits` (`None` before the first read).
    pub fn status(&self) -> Option<NodeLimits> {
        self.status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Store a report; returns whether the status part changed.
    fn set(&self, report: &Report) -> bool {
        *self.text.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(metrics::render(report));
        let status = report.status();
        let mut slot = self.status.write().unwrap_or_else(|e| e.into_inner());
        let changed = slot.as_ref() != Some(&status);
        *slot = Some(status);
        changed
    }
}

/// What the limits loop needs.
pub struct LimitsLoop {
    /// The node's root (its `/proc` is read).
    pub host_root: PathBuf,
    /// This node (the Pods' field selector).
    pub node: String,
    /// Read again at least this often.
    pub resync: Duration,
}

/// (pod UID, container ID, requirement): one unmet requirement of one container.
type Unmet = (String, String, String);

/// Run until the process ends.
pub async fn run(
    params: LimitsLoop,
    state: Arc<AgentState>,
    client: Option<Client>,
    rescan: Arc<Notify>,
) {
    let host = Arc::new(RealHost::new(&params.host_root));
    let pods_changed = Arc::new(Notify::new());
    let pods = client.as_ref().map(|client| {
        let selector = format!("spec.nodeName={}", params.node);
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
        let reader = host.clone();
        match tokio::task::spawn_blocking(move || collect(reader.as_ref())).await {
            Ok(mut report) => {
                let snapshot = pods.as_ref().map(|p| p.state()).unwrap_or_default();
                pods::name_and_check(&mut report, snapshot.iter().map(|p| p.as_ref()));
                if state.limits.set(&report) {
                    rescan.notify_one();
                }
                if let Some(client) = &client {
                    unmet = record_events(client, &params.node, &report, &unmet).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the limits failed"),
        }
        tokio::select! {
            _ = pods_changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(params.resync) => {}
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
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut note = format!("container {}: {}", c.container, r.message);
    if note.len() > NOTE_MAX {
        let mut end = NOTE_MAX;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    let field_path =
        (!c.container.is_empty()).then(|| format!("spec.containers{{{}}}", c.container));
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", c.pod, now.as_nanosecond())),
            namespace: Some(c.namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some("Warning".into()),
        reason: Some("RequirementNotMet".into()),
        action: Some("CheckLimits".into()),
        note: Some(note),
        regarding: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(c.namespace.clone()),
            name: Some(c.pod.clone()),
            uid: Some(c.pod_uid.clone()),
            field_path,
            ..Default::default()
        }),
        reporting_controller: Some("volpool.io/volpool-agent".into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &c.namespace);
    api.create(&PostParams::default(), &event).await.map(|_| ())
}
