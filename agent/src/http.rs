//! HTTP on `--metrics-addr`: `/metrics`, `/healthz` (the process serves) and `/readyz` (the
//! first scan is done and, in a cluster, published). Handlers read shared state only.
//!
//! ```text
//!  scan loop ─► AgentState ◄─ publisher
//!                   │
//!   GET /metrics ───┘ render the cached scan      GET /readyz ─► 200 | 503 + reason
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::Registry;

use crate::error::{Error, Result};
use crate::metrics;
use crate::scan::Scan;

/// What the scan loop and the publisher share with the HTTP handlers.
#[derive(Default)]
pub struct AgentState {
    scan_text: RwLock<Arc<String>>,
    scanned: AtomicBool,
    published: AtomicBool,
    must_publish: bool,
    registry: OnceLock<Registry>,
    /// The latest NFS client status.
    pub nfs: crate::nfs::daemon::NfsState,
    /// The latest limits (metrics text and `status.limits`).
    pub limits: crate::limits::daemon::LimitsState,
}

impl AgentState {
    /// New state; `must_publish` when readiness waits for a first publish.
    pub fn new(must_publish: bool) -> Arc<Self> {
        Arc::new(AgentState {
            must_publish,
            ..AgentState::default()
        })
    }

    /// Store a finished scan.
    pub fn set_scan(&self, scan: &Scan) {
        let text = Arc::new(metrics::render_scan(scan, true));
        *self.scan_text.write().unwrap_or_else(|e| e.into_inner()) = text;
        self.scanned.store(true, Ordering::Release);
    }

    /// The latest scan's metrics text.
    pub fn scan_text(&self) -> Arc<String> {
        self.scan_text
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a scan has finished.
    pub fn scanned(&self) -> bool {
        self.scanned.load(Ordering::Acquire)
    }

    /// Record a successful publish (or a check that found nothing to change).
    pub fn set_published(&self) {
        self.published.store(true, Ordering::Release);
    }

    /// `None` when ready, else why not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.scanned() {
            Some("the first scan has not finished")
        } else if self.must_publish && !self.published.load(Ordering::Acquire) {
            Some("NodeVolumes has not been published yet")
        } else {
            None
        }
    }
}

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
            let scan = state.scan_text();
            let limits = state.limits.text();
            let mut text = String::with_capacity(scan.len() + limits.len() + node_wide.len());
            text.push_str(&scan);
            text.push_str(&limits);
            text.push_str(&node_wide);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                text,
            )
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("{e}\n"),
        ),
    }
}

async fn ready_handler(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    match state.not_ready() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
