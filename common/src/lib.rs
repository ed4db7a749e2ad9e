//! The one library every fraudstream service links: how to reach Kafka (with SASL/TLS pass-through)
//! and ClickHouse, how to create topics, the `/metrics` + `/health` server, logging and OTLP
//! tracing set-up, and helpers for tests that run against the real local services.
//! What two services both need lives here, once.

pub mod alloc;
pub mod args;
pub mod clickhouse;
pub mod features;
#[cfg(feature = "model")]
pub mod forest;
pub mod kafka;
#[cfg(feature = "model")]
pub mod model;
pub mod model_text;
pub mod registry_wait;
pub mod rules;
pub mod server;
pub mod service;
pub mod stop;
pub mod telemetry;
pub mod testing;
pub mod trace;

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
    #[error(transparent)]
    ClickHouseConnect(#[from] clickhouse::ConnectError),
    #[error(transparent)]
    Schema(#[from] fraudstream_schemas::SchemaError),
    #[error("Kafka at {brokers}: {detail}; {hint}")]
    KafkaConnect {
        brokers: String,
        detail: String,
        hint: &'static str,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("telemetry: {0}")]
    Telemetry(String),
}

pub type Result<T, E = CommonError> = std::result::Result<T, E>;

/// At start, tries Kafka and ClickHouse once: a misconfigured connection (wrong protocol,
/// password or CA) is an error that names the setting to fix, while a server that is merely
/// unreachable is only a warning (it may be starting too; every service retries).
pub async fn check_connections(
    kafka: Option<&kafka::KafkaArgs>,
    clickhouse: Option<&clickhouse::ClickHouseArgs>,
) -> Result<()> {
    if let Some(kafka) = kafka {
        match kafka.check_connection(std::time::Duration::from_secs(10)) {
            Err(CommonError::KafkaConnect { hint, detail, .. })
                if hint == kafka::KAFKA_UNREACHABLE =>
            {
                tracing::warn!(brokers = %kafka.brokers, %detail, "Kafka not reachable yet");
            }
            other => other?,
        }
    }
    if let Some(ch) = clickhouse {
        match ch.check_connection().await {
            Err(e) if !e.is_misconfiguration() => {
                tracing::warn!(error = %e, "ClickHouse not reachable yet");
            }
            other => other?,
        }
    }
    Ok(())
}

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
