//! The agent's side of `NodeVolumes.spec.cleanups`: watch this node's object, scrub each
//! requested volume once (on a blocking thread, so scans and `/metrics` go on), and keep the
//! results that the scan loop puts into `status.cleanups`.
//!
//! ```text
//!  watch NodeVolumes/<node> ─► spec.cleanups ─► plan: start the new ones, drop results whose request is gone
//!                                                 │ GET its PV (until the API answers)
//!                                                 │ spawn_blocking(perform with that PV) ─► completions ─┐
//!  Results ◄─────────────────────────────────────────────────────────────────────────────────────────────┘
//!     └─► desired status.cleanups (watch) ─► publisher (server-side apply, only on change)
//! ```
//!
//! Each scrub first reads the PersistentVolume its request names, and `perform` refuses unless
//! that PV backs it (`warrant.rs`): a request is only as good as its PV, since any agent's
//! token may write `spec.cleanups`. While the PV cannot be read (API down, RBAC missing) the
//! scrub waits, reported `Running` with a message saying why: nothing is wiped on a state not
//! known.
//!
//! A scrub is reported `Running` (with `startedAt`) as soon as it starts, and counted in
//! `/metrics` until its thread returns, so one stuck on a hung mount is seen with its age.
//! A result stays while its request does, so a request is never performed twice. On start,
//! the `Succeeded` results already in the API are taken over before anything is published (a
//! restarted agent does not scrub again a volume the controller may be handing out afresh);
//! `Failed` and `Refused` ones are retried, so restarting the agent is how to retry after
//! fixing the cause.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};
use volpool_api::retry::WatchRetry;
use volpool_api::{CleanupOutcome, CleanupRequest, CleanupResult, NodeVolumes, NodeVolumesStatus};

use super::Warrant;
use crate::cluster::Retry;
use crate::context::Context;
use crate::pools::LocalPool;
use crate::state::RunningScrub;

/// The pools selected for this node now.
pub type CurrentPools = Arc<dyn Fn() -> Vec<LocalPool> + Send + Sync>;

/// Scrub results to report, by PV UID. Shared by the cleanup loop (which writes them) and the
/// scan loop (which puts them into every status it hands to the publisher).
#[derive(Clone)]
pub struct Results {
    by_uid: Arc<Mutex<BTreeMap<String, CleanupResult>>>,
    ready: Arc<watch::Sender<bool>>,
}

impl Default for Results {
    fn default() -> Self {
        Results {
            by_uid: Arc::default(),
            ready: Arc::new(watch::channel(false).0),
        }
    }
}

impl Results {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, CleanupResult>> {
        self.by_uid.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every result, ordered by PV UID.
    pub fn list(&self) -> Vec<CleanupResult> {
        self.lock().values().cloned().collect()
    }

    /// Wait until the results already in the API have been taken over.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

/// What to do about the requests in `spec.cleanups`.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Requests to perform now.
    pub start: Vec<CleanupRequest>,
    /// PV UIDs whose result to drop: their request is gone.
    pub drop: Vec<String>,
}

/// Decide which requests to start and which results to drop. No I/O.
pub fn plan(
    requests: &[CleanupRequest],
    results: &BTreeMap<String, CleanupResult>,
    running: &HashSet<String>,
) -> Plan {
    let wanted: HashSet<&str> = requests.iter().map(|r| r.pv_uid.as_str()).collect();
    let mut seen = HashSet::new();
    Plan {
        start: requests
            .iter()
            .filter(|r| !results.contains_key(&r.pv_uid) && !running.contains(&r.pv_uid))
            .filter(|r| seen.insert(r.pv_uid.as_str()))
            .cloned()
            .collect(),
        drop: results
            .keys()
            .filter(|uid| !wanted.contains(uid.as_str()))
            .cloned()
            .collect(),
    }
}

/// The results recorded in the API that a starting agent takes over: `Succeeded` ones whose
/// request is still there.
pub fn adopt(requests: &[CleanupRequest], recorded: &[CleanupResult]) -> Vec<CleanupResult> {
    recorded
        .iter()
        .filter(|r| r.result == CleanupOutcome::Succeeded)
        .filter(|r| requests.iter().any(|q| q.pv_uid == r.pv_uid))
        .cloned()
        .collect()
}

/// What the cleanup loop needs besides the [`Context`].
pub struct Cleaner {
    /// The pools selected for this node now.
    pub pools: CurrentPools,
    /// Results shared with the scan loop.
    pub results: Results,
    /// The status the publisher writes; results are put into it on every change.
    pub desired: watch::Sender<Option<NodeVolumesStatus>>,
}

/// Watch `NodeVolumes/<node>` and perform its cleanups, until the process ends.
pub async fn run(ctx: Arc<Context>, client: Client, cleaner: Cleaner) {
    let api: Api<NodeVolumes> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={}", ctx.node));
    let mut stream = std::pin::pin!(watcher::watcher(api, config).backoff(Retry::default()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<CleanupResult>();
    let mut running: HashSet<String> = HashSet::new();
    let mut requests: Vec<CleanupRequest> = Vec::new();
    let mut adopted = false;
    let mut listed: Option<NodeVolumes> = None;
    loop {
        tokio::select! {
            event = stream.next() => {
                let object = match event {
                    Some(Ok(Event::Apply(nv))) => Some(nv),
                    Some(Ok(Event::Delete(_))) => None,
                    Some(Ok(Event::Init)) => { listed = None; continue }
                    Some(Ok(Event::InitApply(nv))) => { listed = Some(nv); continue }
                    Some(Ok(Event::InitDone)) => listed.take(),
                    Some(Err(e)) => {
                        tracing::warn!(
                            error = %e,
                            "watch of NodeVolumes failed (scrubs need get, list and watch on nodevolumes); retrying"
                        );
                        continue;
                    }
                    None => return,
                };
                requests = object.as_ref().map(|nv| nv.spec.cleanups.clone()).unwrap_or_default();
                if !adopted {
                    adopted = true;
                    let recorded = object
                        .as_ref()
                        .and_then(|nv| nv.status.as_ref())
                        .map(|s| s.cleanups.as_slice())
                        .unwrap_or_default();
                    let mut results = cleaner.results.lock();
                    for r in adopt(&requests, recorded) {
                        results.insert(r.pv_uid.clone(), r);
                    }
                    drop(results);
                    cleaner.results.ready.send_replace(true);
                }
            }
            Some(result) = done_rx.recv() => {
                finished(&ctx, &cleaner.results, &mut running, &requests, result);
            }
        }
        let todo = plan(&requests, &cleaner.results.lock(), &running);
        {
            let mut results = cleaner.results.lock();
            for uid in &todo.drop {
                results.remove(uid);
            }
        }
        for request in todo.start {
            running.insert(request.pv_uid.clone());
            start(
                &ctx,
                &client,
                &cleaner.results,
                request,
                done_tx.clone(),
                (cleaner.pools)(),
            );
        }
        let list = cleaner.results.list();
        cleaner.desired.send_if_modified(|status| match status {
            Some(status) if status.cleanups != list => {
                status.cleanups = list;
                true
            }
            _ => false,
        });
    }
}

/// Record the news from a scrub: a `Running` note (why it waits) or its end.
fn finished(
    ctx: &Context,
    results: &Results,
    running: &mut HashSet<String>,
    requests: &[CleanupRequest],
    mut result: CleanupResult,
) {
    if result.result == CleanupOutcome::Running {
        let mut results = results.lock();
        let waiting = results.get_mut(&result.pv_uid);
        if let Some(waiting) = waiting.filter(|r| r.result == CleanupOutcome::Running) {
            waiting.message = result.message;
        }
        return;
    }
    running.remove(&result.pv_uid);
    ctx.state.scrubs.finish(&result.pv_uid);
    if result.result == CleanupOutcome::Succeeded {
        tracing::info!(
            volume_id = %result.volume_id, pv_uid = %result.pv_uid,
            result = ?result.result, message = %result.message, "scrub finished"
        );
    } else {
        tracing::warn!(
            volume_id = %result.volume_id, pv_uid = %result.pv_uid,
            result = ?result.result, message = %result.message, "scrub not done"
        );
    }
    // NB: a request withdrawn while its scrub ran gets no result.
    if requests.iter().any(|r| r.pv_uid == result.pv_uid) {
        let mut results = results.lock();
        if let Some(reported) = results.get(&result.pv_uid) {
            result.started_at = reported.started_at.clone();
        }
        results.insert(result.pv_uid.clone(), result);
    }
}

/// Start the scrub of `request`: reported Running at once (so one stuck on a hung mount or
/// waiting for the API shows its age), then its PV is read and `perform` runs on a blocking
/// thread; news and the end go to `done`.
fn start(
    ctx: &Arc<Context>,
    client: &Client,
    results: &Results,
    request: CleanupRequest,
    done: mpsc::UnboundedSender<CleanupResult>,
    pools: Vec<LocalPool>,
) {
    let started = super::running(&request, super::now());
    results.lock().insert(request.pv_uid.clone(), started);
    ctx.state.scrubs.start(
        &request.pv_uid,
        RunningScrub {
            persistent_volume: request.persistent_volume.clone(),
            volume_id: request.volume_id.clone(),
            since: SystemTime::now(),
        },
    );
    tracing::info!(
        volume_id = %request.volume_id, pv = %request.persistent_volume,
        method = ?request.method, "scrub started"
    );
    let (ctx, api) = (ctx.clone(), Api::<PersistentVolume>::all(client.clone()));
    let results = results.clone();
    tokio::spawn(async move {
        let Some(pv) = read_pv(&api, &request, &results, &done).await else {
            let message = "the request was withdrawn while the scrub waited to read its \
                           PersistentVolume; nothing was touched";
            let _ = done.send(CleanupResult {
                result: CleanupOutcome::Refused,
                message: message.into(),
                finished_at: super::now(),
                ..super::running(&request, String::new())
            });
            return;
        };
        let warrant = Warrant::Pv {
            node: ctx.node.clone(),
            pv: pv.map(Box::new),
        };
        let host = ctx.host.clone();
        tokio::task::spawn_blocking(move || {
            let result = super::perform(host.as_ref(), host.as_ref(), &pools, &request, &warrant);
            let _ = done.send(result);
        });
    });
}

/// The PV `request` names, as the API has it now (`Some(None)`: there is none). Asks until
/// the API answers, meanwhile sending a `Running` note on `notes` that says why the scrub
/// waits; `None` when the request is withdrawn meanwhile (its result gone from `results`).
async fn read_pv(
    api: &Api<PersistentVolume>,
    request: &CleanupRequest,
    results: &Results,
    notes: &mpsc::UnboundedSender<CleanupResult>,
) -> Option<Option<PersistentVolume>> {
    let name = &request.persistent_volume;
    if name.is_empty() {
        return Some(None);
    }
    let mut retry = WatchRetry::default();
    loop {
        let error = match api.get_opt(name).await {
            Ok(pv) => return Some(pv),
            Err(e) => e,
        };
        if !results.lock().contains_key(&request.pv_uid) {
            return None;
        }
        let message = format!(
            "waiting to read PersistentVolume {name} before scrubbing (the agent needs get on persistentvolumes): {error}; nothing is touched until it can be read"
        );
        tracing::warn!(pv = %name, %error, "cannot read the PV of a scrub request; retrying");
        let note = CleanupResult {
            message,
            ..super::running(request, String::new())
        };
        let _ = notes.send(note);
        tokio::time::sleep(retry.next().unwrap_or_default()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use volpool_api::CleanupMethod;

    fn request(uid: &str) -> CleanupRequest {
        CleanupRequest {
            volume_id: format!("uuid:{uid}"),
            persistent_volume: format!("pv-{uid}"),
            pv_uid: uid.into(),
            claim_uid: String::new(),
            method: CleanupMethod::Wipe,
        }
    }

    fn result(uid: &str, outcome: CleanupOutcome) -> CleanupResult {
        CleanupResult {
            volume_id: format!("uuid:{uid}"),
            pv_uid: uid.into(),
            result: outcome,
            message: String::new(),
            finished_at: "2026-11-25T23:00:00Z".into(),
            started_at: String::new(),
        }
    }

    #[test]
    fn each_request_starts_once_and_results_go_with_their_requests() {
        let requests = [request("a"), request("b"), request("c"), request("c")];
        let results = BTreeMap::from([
            ("a".to_string(), result("a", CleanupOutcome::Failed)),
            (
                "gone".to_string(),
                result("gone", CleanupOutcome::Succeeded),
            ),
        ]);
        let running = HashSet::from(["b".to_string()]);
        let todo = plan(&requests, &results, &running);
        assert_eq!(todo.start, [request("c")], "a has a result, b runs, c once");
        assert_eq!(todo.drop, ["gone"]);
        assert_eq!(
            plan(&[], &BTreeMap::new(), &HashSet::new()),
            Plan::default()
        );
    }

    #[test]
    fn a_restarted_agent_takes_over_only_succeeded_results_still_asked_for() {
        let requests = [request("a"), request("b")];
        let recorded = [
            result("a", CleanupOutcome::Succeeded),
            result("b", CleanupOutcome::Failed),
            result("old", CleanupOutcome::Succeeded),
        ];
        assert_eq!(
            adopt(&requests, &recorded),
            [result("a", CleanupOutcome::Succeeded)]
        );
    }
}

#[cfg(test)]
#[path = "read_pv_tests.rs"]
mod read_pv_tests;
