//! HTTP on `--metrics-addr`: `/metrics`, `/healthz` (the process serves) and `/readyz` (the
//! first scan is done and, in a cluster, published). Handlers read shared state only.
//!
//! ```text
//!  scan loop ─► AgentState ◄─ publisher
//!                   │
//!   GET /metrics ───┘ render the cached scan      GET /readyz ─► 200 | 503 + reason
//! ```

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::error::{Error, Result};
use crate::metrics;
use crate::state::AgentState;

/// Serve until the process ends.
pub async fn serve(addr: &str, state: Arc<AgentState>) -> Result<()> {
    let registry = metrics::registry(state.clone())?;
    let _ = state.registry.set(registry);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::ServeHttp {
            addr: addr.to_string(),
            source,
        })?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(state);
    axum::serve(listener, app)
        .await
        .map_err(|source| Error::ServeHttp {
            addr: addr.to_string(),
            source,
        })
}

async fn metrics_handler(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    let rendered = state
        .registry
        .get()
        .map(metrics::render)
        .unwrap_or_else(|| Ok(String::new()));
    match rendered {
        Ok(node_wide) => {
            // NB: the cached texts are sent as they are, not copied into one response: a copy
            // per scrape is as big as the scan's text, and glibc keeps such blocks.
            let parts = [
                Bytes::from_owner(Shared(state.scan_text())),
                Bytes::from_owner(Shared(state.limits.text())),
                Bytes::from(crate::network::metrics::render(
                    state.network.get().as_ref(),
                )),
                Bytes::from(node_wide),
            ];
            let body = futures::stream::iter(parts.map(Ok::<_, std::convert::Infallible>));
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                Body::from_stream(body),
            )
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            Body::from(format!("{e}\n")),
        ),
    }
}

/// A cached text shared with a response body.
struct Shared(Arc<String>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

async fn ready_handler(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    // NB: the apiserver path is told either way: ready on the kubelet kubeconfig's path says
    // so, and not ready for want of a publish says why the apiserver does not answer.
    let note = state.network.get().map(|n| n.note).unwrap_or_default();
    let note = if note.is_empty() {
        note
    } else {
        format!(": {note}")
    };
    match state.not_ready() {
        None => (StatusCode::OK, format!("ready{note}\n")),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}{note}\n"),
        ),
    }
}
