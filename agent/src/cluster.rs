//! Small helpers over the Kubernetes API that several loops use: a reflector store kept up to
//! date on a task, and recording an Event as this agent.
//!
//! ```text
//!  watch(api, config) ─► reflector ─► Store (read by the loop) + Notify (one per event)
//!  Notice ─► volpool_api::events::event (reporter volpool-agent/<node>) ─► POST events.k8s.io/v1
//! ```

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;
use volpool_api::events::{self, Notice, Reporter};

volpool_api::watch_backoff!();

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
    let stream = reflector::reflector(writer, watcher(api, config).backoff(Retry::default()));
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

/// Record `notice` as the agent on `node`.
pub async fn record_event(client: &Client, node: &str, notice: Notice) -> Result<(), kube::Error> {
    let namespace = events::event_namespace(&notice.regarding);
    let reporter = Reporter {
        controller: events::REPORTING_AGENT,
        instance: node,
    };
    let event = events::event(notice, reporter, Timestamp::now());
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    api.create(&PostParams::default(), &event).await.map(|_| ())
}
