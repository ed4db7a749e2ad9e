//! The `/metrics` (Prometheus text format) and `/health` endpoint every service exposes.

use crate::Result;
use axum::{extract::State, http::StatusCode, routing::get, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A service's health as `/health` reports it: 200 when ready, 503 with the reason otherwise.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    detail: Mutex<String>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Health {
            ready: AtomicBool::new(false),
            detail: Mutex::new("starting".into()),
        })
    }

    pub fn set_ready(&self, detail: impl Into<String>) {
        *self.detail.lock().unwrap() = detail.into();
        self.ready.store(true, Ordering::Release);
    }

    pub fn set_unready(&self, detail: impl Into<String>) {
        *self.detail.lock().unwrap() = detail.into();
        self.ready.store(false, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    health: Arc<Health>,
}

/// Serves `/metrics` and `/health` on `addr` (port 0 picks a free port) until the process exits.
/// Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    health: Arc<Health>,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health_check))
        .with_state(AppState { registry, health });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    tracing::info!(%bound, "serving /metrics and /health");
    Ok(bound)
}

async fn metrics(State(state): State<AppState>) -> (StatusCode, String) {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&state.registry.gather(), &mut buf) {
        Ok(()) => (StatusCode::OK, String::from_utf8_lossy(&buf).into_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn health_check(State(state): State<AppState>) -> (StatusCode, String) {
    let detail = state.health.detail.lock().unwrap().clone();
    if state.health.is_ready() {
        (StatusCode::OK, format!("ok: {detail}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {detail}\n"),
        )
    }
}
