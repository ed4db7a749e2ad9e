//! The one library every fraudstream service links: how to reach Kafka (with SASL/TLS pass-through)
//! and ClickHouse, how to create topics, the `/metrics` + `/health` server, logging and OTLP
//! tracing set-up, and helpers for tests that run against the real local services.
//! What two services both need lives here, once.

pub mod clickhouse;
pub mod features;
#[cfg(feature = "model")]
pub mod forest;
pub mod kafka;
#[cfg(feature = "model")]
pub mod model;
pub mod server;
pub mod telemetry;
pub mod testing;

/// Errors of the shared plumbing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommonError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("Kafka config: {0}")]
    KafkaConfig(String),
    #[error("creating topic {topic}: {message}")]
    TopicCreation { topic: String, message: String },
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] ::clickhouse::error::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("telemetry: {0}")]
    Telemetry(String),
}

pub type Result<T, E = CommonError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: every service's cue to flush, commit and exit 0.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
