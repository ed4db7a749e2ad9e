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

    /// What `/health` says after "ok:" or "not ready:".
    pub fn detail(&self) -> String {
        self.detail.lock().unwrap().clone()
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    /// CPU seconds and RSS (`process_*`, unprefixed: dashboards tell services apart by job).
    process: Registry,
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
    let process = Registry::new();
    process.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health_check))
        .with_state(AppState {
            registry,
            process,
            health,
        });
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
    let mut families = state.registry.gather();
    families.extend(state.process.gather());
    match TextEncoder::new().encode(&families, &mut buf) {
        Ok(()) => (StatusCode::OK, String::from_utf8_lossy(&buf).into_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn health_check(State(state): State<AppState>) -> (StatusCode, String) {
    let detail = state.health.detail();
    if state.health.is_ready() {
        (StatusCode::OK, format!("ok: {detail}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {detail}\n"),
        )
    }
}

/// Creates metrics and registers them in one step, so a service's metrics struct is a list of
/// names and help texts (every name gets the registry's service prefix).
pub struct Registrar {
    pub registry: Registry,
    prefix: String,
}

impl Registrar {
    /// Metric names will start with `<service>_`.
    pub fn new(service: &str) -> Result<Self> {
        Ok(Registrar {
            registry: Registry::new(),
            prefix: format!("{service}_"),
        })
    }

    /// Metrics of `<service>_` added to an existing registry (a second loop of one service).
    pub fn on(registry: Registry, service: &str) -> Self {
        Registrar {
            registry,
            prefix: format!("{service}_"),
        }
    }

    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> Result<M> {
        self.registry.register(Box::new(m.clone()))?;
        Ok(m)
    }

    pub fn counter(&self, name: &str, help: &str) -> Result<prometheus::IntCounter> {
        self.add(prometheus::IntCounter::new(self.name(name), help)?)
    }

    pub fn gauge(&self, name: &str, help: &str) -> Result<prometheus::IntGauge> {
        self.add(prometheus::IntGauge::new(self.name(name), help)?)
    }

    /// A histogram with exponential buckets: `count` buckets from `start`, each `factor` wider.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        start: f64,
        factor: f64,
        count: usize,
    ) -> Result<prometheus::Histogram> {
        let buckets = prometheus::exponential_buckets(start, factor, count)?;
        self.add(prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(self.name(name), help).buckets(buckets),
        )?)
    }

    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<prometheus::IntCounterVec> {
        self.add(prometheus::IntCounterVec::new(
            prometheus::Opts::new(self.name(name), help),
            labels,
        )?)
    }

    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<prometheus::IntGaugeVec> {
        self.add(prometheus::IntGaugeVec::new(
            prometheus::Opts::new(self.name(name), help),
            labels,
        )?)
    }
}
