//! `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`.
//!
//! Ready means the watches have their first full lists (a follower is ready too: it can take
//! over at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct Health {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// Set once the stores are synced.
    pub ready: Arc<AtomicBool>,
}

/// Bind `addr` (so a taken port fails at start), then serve in the background.
pub async fn serve(addr: &str, health: Health) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve {
            addr: addr.into(),
            source,
        })?;
    let addr = addr.to_string();
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(h): State<Health>| async move { h.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Health>| async move {
                if h.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "waiting for the first list of every watch",
                    )
                }
            }),
        )
        .with_state(health);
    Ok(tokio::spawn(async move {
        if let Err(source) = axum::serve(listener, app).await {
            tracing::error!(error = %Error::Serve { addr, source }, "metrics listener stopped");
        }
    }))
}
