//! The scorer: the heart of fraudstream. Instances share `transactions` through a consumer group;
//! each computes features (shared code, same as the trainer), scores with the LightGBM champion
//! (and a challenger in shadow), and writes one `Prediction` per transaction plus an alert with
//! its top reasons when the score reaches the threshold.
//!
//! Delivery: exactly-once. Outputs (predictions, alerts, dead letters) and the input offsets are
//! committed in one Kafka transaction (read-process-write). Before partitions are taken away in
//! a rebalance the open transaction is committed; if a commit fails it is aborted and the consumer
//! rewinds to the committed offsets, so the work is redone and each transaction ends up with
//! exactly one committed prediction.
//!
//! Two threads per instance: the Kafka thread polls, sends and commits; the scoring stage
//! (`stage.rs`) decodes, scores and encodes one batch while the Kafka thread polls the next and
//! sends the previous one. A transaction only ever holds the offsets of records whose outputs it
//! holds too, so the pipeline changes nothing about exactly-once.
//!
//! Per-account state (count/sum over the window, steps since last) is rebuilt on assignment by
//! re-reading the partition's recent input (`state_lookback` records before the first offset to
//! score). Because the Kafka key is the origin account, a partition holds all of its accounts'
//! history, and the state is exact as long as the lookback covers the window. This keeps the hot
//! path free of changelog writes; the cost is a bounded re-read after a rebalance or restart.

mod kafka_loop;
pub mod metrics;
pub mod models;
mod resume;
mod rules;
mod stage;
mod state;
mod txn;
mod watchdog;
mod watcher;

use fraudstream_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
use fraudstream_common::registry_wait::RegistryWait;
use fraudstream_common::server::Health;
use fraudstream_common::CommonError;
use fraudstream_schemas::{topics, Codec, Prediction, SchemaError};
use metrics::ScorerMetrics;
use rdkafka::error::KafkaError;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Errors that stop the scorer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScorerError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Common(#[from] CommonError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("bootstrap model {path} cannot be read")]
    BootstrapFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bootstrap model {path} does not load")]
    Bootstrap {
        path: String,
        #[source]
        source: fraudstream_common::model::ModelError,
    },
    #[error("LightGBM failed scoring a batch")]
    Predict(#[source] lightgbm3::Error),
    #[error("the scoring thread could not be started")]
    Thread(#[source] std::io::Error),
    #[error("the scoring thread stopped (see the error logged before)")]
    StageStopped,
    #[error("the scoring thread panicked")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("stopped while the schema registry was unavailable ({0}); the records not yet scored are scored by the group once the registry answers")]
    StoppedInOutage(#[source] SchemaError),
    #[error("the Kafka transaction could not be committed, aborted, nor a new producer started (the instance stops; a restart resumes from the last commit)")]
    Transaction(#[source] Box<TransactionFailure>),
    #[error("committing before a rebalance failed (the instance stops; a restart resumes from the last commit)")]
    Rebalance(#[source] Box<ScorerError>),
}

/// Why a failed commit could not be cleaned up: each step's own error.
#[derive(Debug, thiserror::Error)]
#[error("commit: {commit}; abort: {abort}; new producer: {new_producer}")]
pub struct TransactionFailure {
    pub commit: String,
    #[source]
    pub abort: KafkaError,
    pub new_producer: Box<ScorerError>,
}

/// Everything the scorer needs to run: its flags (each also an environment variable).
#[derive(Debug, Clone, clap::Args)]
pub struct ScorerConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// This instance's stable name: its Kafka transactional.id is derived from it, so a restarted
    /// instance fences its crashed predecessor at once. Default: scorer-<hostname> ($HOSTNAME,
    /// else /etc/hostname).
    #[arg(long, env = "FRAUDSTREAM_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Consumer group shared by all scorer instances.
    #[arg(long, env = "FRAUDSTREAM_SCORER_GROUP", default_value = "scorer")]
    pub group: String,
    #[arg(long = "transactions-topic", value_name = "TRANSACTIONS_TOPIC", env = "FRAUDSTREAM_TRANSACTIONS_TOPIC", default_value = topics::TRANSACTIONS)]
    pub input_topic: String,
    #[arg(long, env = "FRAUDSTREAM_PREDICTIONS_TOPIC", default_value = topics::PREDICTIONS)]
    pub predictions_topic: String,
    #[arg(long, env = "FRAUDSTREAM_ALERTS_TOPIC", default_value = topics::FRAUD_ALERTS)]
    pub alerts_topic: String,
    #[arg(long, env = "FRAUDSTREAM_DLQ_TOPIC", default_value = topics::TRANSACTIONS_DLQ)]
    pub dlq_topic: String,
    #[arg(long, env = "FRAUDSTREAM_MODELS_TOPIC", default_value = topics::MODELS)]
    pub models_topic: String,
    /// Analyst rules (compacted; `trainer rules --help`), applied between batches.
    #[arg(long, env = "FRAUDSTREAM_RULES_TOPIC", default_value = topics::RULES)]
    pub rules_topic: String,
    /// Model name to serve from the models topic.
    #[arg(long, env = "FRAUDSTREAM_MODEL_NAME", default_value = "paysim")]
    pub model_name: String,
    /// A LightGBM text model to serve until the models topic has a champion.
    #[arg(long = "model", env = "FRAUDSTREAM_MODEL_FILE")]
    pub bootstrap_model: Option<PathBuf>,
    /// Alert threshold for the --model file.
    #[arg(
        long = "threshold",
        value_name = "THRESHOLD",
        env = "FRAUDSTREAM_THRESHOLD",
        default_value_t = 0.5
    )]
    pub bootstrap_threshold: f64,
    /// Longest a Kafka transaction stays open (ms), under full load: higher = more throughput.
    #[arg(long = "commit-interval-ms", value_name = "COMMIT_INTERVAL_MS", env = "FRAUDSTREAM_COMMIT_INTERVAL_MS", default_value = "100",
          value_parser = fraudstream_common::args::millis)]
    pub commit_interval: Duration,
    /// Once the scorer has caught up with its input, it commits when the transaction is this old
    /// (ms): light traffic is readable downstream within a few ms, a busy stream still commits
    /// every --commit-interval-ms.
    #[arg(long = "min-commit-interval-ms", value_name = "MIN_COMMIT_INTERVAL_MS", env = "FRAUDSTREAM_MIN_COMMIT_INTERVAL_MS", default_value = "5",
          value_parser = fraudstream_common::args::millis)]
    pub min_commit_interval: Duration,
    /// Most records scored in one batch. Four batches are in flight, so this sets most of the
    /// scorer's own memory: 5000 peaks at ~93 MiB, 10000 at ~106 MiB, at the same throughput
    /// (measured side by side on 631k transactions).
    #[arg(long, env = "FRAUDSTREAM_MAX_BATCH", default_value_t = 5_000)]
    pub max_batch: usize,
    #[command(flatten)]
    pub memory: fraudstream_common::kafka::MemoryArgs,
    /// Records per partition re-read to rebuild per-account state after an assignment.
    #[arg(long, env = "FRAUDSTREAM_STATE_LOOKBACK", default_value_t = 200_000)]
    pub state_lookback: i64,
    /// Partitions for output topics this scorer creates if they are missing.
    #[arg(long, env = "FRAUDSTREAM_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,
    /// Benchmark baseline: forward the raw bytes to the predictions topic (no decoding, no
    /// scoring) through the same exactly-once loop.
    #[arg(long, hide = true)]
    pub passthrough: bool,
    /// Stop cleanly after this many records (benchmarks).
    #[arg(long, hide = true)]
    pub stop_after: Option<u64>,
}

impl ScorerConfig {
    /// Stable per instance: a restarted instance fences its predecessor's open transaction.
    /// HOSTNAME first: containers get a distinct one per replica (compose's `replicas: 2`).
    pub fn transactional_id(&self) -> String {
        let instance = self.instance_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.trim().is_empty())
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|| "local".into());
            format!("scorer-{host}")
        });
        format!("fraudstream-{instance}")
    }
}

/// Counts of one run (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub records: u64,
    pub predictions: u64,
    pub alerts: u64,
    pub dead_letters: u64,
    /// From the first record polled to the last commit.
    pub busy: Duration,
}

impl RunSummary {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

/// Starts the scorer and runs until `stop` is set (then commits and returns) or a fatal error.
pub async fn run(
    cfg: ScorerConfig,
    metrics: Arc<ScorerMetrics>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, ScorerError> {
    ensure_topics(
        &cfg.kafka.admin()?,
        &[
            // The input too: a subscription to a missing topic idles until a metadata refresh.
            TopicSpec::new(&cfg.input_topic, cfg.partitions),
            TopicSpec::new(&cfg.predictions_topic, cfg.partitions),
            TopicSpec::new(&cfg.alerts_topic, cfg.partitions),
            TopicSpec::new(&cfg.dlq_topic, cfg.partitions),
            TopicSpec::new(&cfg.models_topic, 1).compacted(),
            TopicSpec::new(&cfg.rules_topic, 1).compacted(),
        ],
    )
    .await?;
    let codec = Arc::new(cfg.kafka.codec()?);
    // A registry that is down while the scorer starts delays the start; it is not an error.
    let registry = Arc::new(RegistryWait::new(
        metrics.registry_up.clone(),
        health.clone(),
        Duration::from_secs(5),
    ));
    let stopping = || stop.load(Ordering::Relaxed);
    let prediction_schema = registry
        .retry(stopping, || {
            codec.schema_id::<Prediction>(&cfg.predictions_topic)
        })
        .await?;
    let alert_schema = registry
        .retry(stopping, || {
            codec.schema_id::<Prediction>(&cfg.alerts_topic)
        })
        .await?;
    let bootstrap =
        match &cfg.bootstrap_model {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                ScorerError::BootstrapFile {
                    path: path.display().to_string(),
                    source,
                }
            })?),
            None => None,
        };
    let runtime = tokio::runtime::Handle::current();
    let watch = |topic: &str, name| watcher::Watch {
        kafka: cfg.kafka.clone(),
        topic: topic.to_string(),
        name,
        codec: codec.clone(),
        registry: registry.clone(),
        runtime: runtime.clone(),
        stop: stop.clone(),
    };
    let (models_tx, models) = std::sync::mpsc::channel();
    let (rules_tx, rules) = std::sync::mpsc::channel();
    let watchers = [
        watcher::spawn(watch(&cfg.models_topic, "scorer-models-reader"), models_tx)?,
        watcher::spawn(watch(&cfg.rules_topic, "scorer-rules-reader"), rules_tx)?,
    ];
    let updates = Updates { models, rules };
    let engine = Engine {
        cfg,
        codec,
        registry,
        runtime,
        metrics,
        health,
        stop,
        prediction_schema,
        alert_schema,
    };
    let engine = Arc::new(engine);
    let summary = tokio::task::spawn_blocking(move || engine.run(updates, bootstrap))
        .await
        .map_err(ScorerError::Panicked)?;
    for w in watchers {
        let _ = w.join();
    }
    summary
}

/// The changes the scoring stage applies between batches, from the two compacted topics.
pub(crate) struct Updates {
    pub models: std::sync::mpsc::Receiver<models::ModelEvent>,
    pub rules: std::sync::mpsc::Receiver<rules::RuleEvent>,
}

/// What the Kafka thread and the scoring stage share: the configuration and the clients.
struct Engine {
    cfg: ScorerConfig,
    codec: Arc<Codec>,
    registry: Arc<RegistryWait>,
    /// For the registry client's async calls from the two threads.
    runtime: tokio::runtime::Handle,
    metrics: Arc<ScorerMetrics>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    /// Registry ids of the predictions' and alerts' schemas (looked up once at start).
    prediction_schema: u32,
    alert_schema: u32,
}

pub use fraudstream_common::model::bootstrap_record;
