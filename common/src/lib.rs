//! The one library every fraudstream service links: how to reach Kafka (with SASL/TLS pass-through)
//! and ClickHouse, how to create topics, the `/metrics` + `/health` server, logging and OTLP
//! tracing set-up, and helpers for tests that run against the real local services.
//! What two services both need lives here, once.

pub mod accounts;
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
pub mod reexec;
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
    #[error("ClickHouse cluster DDL: {0}")]
    ClusterDdl(String),
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
    #[error(
        "reading {topic} [{partition}] from offset {from} up to {end}: only up to offset {reached} \
         after {seconds} s (last error: {last_error}); check that the broker is reachable and the \
         partition has a leader (deploy/local/kafka-topics.sh --describe --topic {topic}), then run again"
    )]
    RangeIncomplete {
        topic: String,
        partition: i32,
        from: i64,
        end: i64,
        reached: i64,
        seconds: u64,
        last_error: String,
    },
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
/// `YYYY-MM-DD hh:mm:ss` for Unix seconds (UTC), without a date library (Howard Hinnant's
/// civil-from-days).
pub fn utc_datetime(secs: u32) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

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
