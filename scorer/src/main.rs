use anyhow::Result;
use clap::Parser;
use fraudstream_common::kafka::KafkaArgs;
use fraudstream_common::server::{self, Health};
use fraudstream_common::stop::Stop;
use fraudstream_common::telemetry::{self, TelemetryArgs};
use fraudstream_schemas::topics;
use scorer::metrics::ScorerMetrics;
use scorer::{run, ScorerConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Scores every transaction with the LightGBM champion, exactly once, and raises alerts.
///
/// Run as many instances as the input topic has partitions; they share the work through the
/// consumer group. Each needs its own --instance-id (stable across restarts).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    /// This instance's stable name: its Kafka transactional.id is derived from it, so a restarted
    /// instance fences its crashed predecessor at once. Default: scorer-<hostname> ($HOSTNAME,
    /// else /etc/hostname).
    #[arg(long, env = "FRAUDSTREAM_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Consumer group shared by all scorer instances.
    #[arg(long, env = "FRAUDSTREAM_SCORER_GROUP", default_value = "scorer")]
    group: String,
    /// Model name to serve from the models topic.
    #[arg(long, env = "FRAUDSTREAM_MODEL_NAME", default_value = "paysim")]
    model_name: String,
    /// A LightGBM text model to serve until the models topic has a champion.
    #[arg(long = "model", env = "FRAUDSTREAM_MODEL_FILE")]
    bootstrap_model: Option<PathBuf>,
    /// Alert threshold for the --model file.
    #[arg(long, env = "FRAUDSTREAM_THRESHOLD", default_value_t = 0.5)]
    threshold: f64,
    /// How long a Kafka transaction stays open (ms): lower = less latency, higher = more throughput.
    #[arg(long, env = "FRAUDSTREAM_COMMIT_INTERVAL_MS", default_value_t = 100)]
    commit_interval_ms: u64,
    /// Most records scored in one batch.
    #[arg(long, env = "FRAUDSTREAM_MAX_BATCH", default_value_t = 10_000)]
    max_batch: usize,
    /// Records per partition re-read to rebuild per-account state after an assignment.
    #[arg(long, env = "FRAUDSTREAM_STATE_LOOKBACK", default_value_t = 200_000)]
    state_lookback: i64,
    #[arg(long, env = "FRAUDSTREAM_TRANSACTIONS_TOPIC", default_value = topics::TRANSACTIONS)]
    transactions_topic: String,
    #[arg(long, env = "FRAUDSTREAM_PREDICTIONS_TOPIC", default_value = topics::PREDICTIONS)]
    predictions_topic: String,
    #[arg(long, env = "FRAUDSTREAM_ALERTS_TOPIC", default_value = topics::FRAUD_ALERTS)]
    alerts_topic: String,
    #[arg(long, env = "FRAUDSTREAM_DLQ_TOPIC", default_value = topics::TRANSACTIONS_DLQ)]
    dlq_topic: String,
    #[arg(long, env = "FRAUDSTREAM_MODELS_TOPIC", default_value = topics::MODELS)]
    models_topic: String,
    /// Partitions for output topics this scorer creates if they are missing.
    #[arg(long, env = "FRAUDSTREAM_PARTITIONS", default_value_t = 6)]
    partitions: i32,
    /// Benchmark baseline: forward the raw bytes to the predictions topic (no decoding, no
    /// scoring) through the same exactly-once loop.
    #[arg(long, hide = true)]
    passthrough: bool,
    /// Stop cleanly after this many records (benchmarks).
    #[arg(long, hide = true)]
    stop_after: Option<u64>,
    /// Threads each LightGBM call may use. 1 scales best: add partitions and instances instead
    /// (on a busy machine an OpenMP team spends its time waiting for descheduled members).
    #[arg(long, env = "FRAUDSTREAM_LIGHTGBM_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..))]
    lightgbm_threads: i32,
    /// Score with LightGBM's own predict and SHAP instead of the native evaluation of the same
    /// trees. The native one is ~3x faster and, when a model loads, must give LightGBM's exact
    /// scores and contributions on probe rows, or LightGBM serves that model anyway.
    #[arg(long, env = "FRAUDSTREAM_LIGHTGBM_PREDICT")]
    lightgbm_predict: bool,
    /// Address of /metrics and /health.
    #[arg(
        long,
        env = "FRAUDSTREAM_METRICS_ADDR",
        default_value = "127.0.0.1:9102"
    )]
    metrics_addr: std::net::SocketAddr,
}

fn main() -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run_scorer())
}

async fn run_scorer() -> Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init("scorer", &cli.telemetry)?;
    fraudstream_common::check_connections(Some(&cli.kafka), None).await?;
    fraudstream_common::model::limit_threads(cli.lightgbm_threads);
    fraudstream_common::model::use_native_trees(!cli.lightgbm_predict);
    let metrics = Arc::new(ScorerMetrics::new()?);
    let health = Health::new();
    server::serve(cli.metrics_addr, metrics.registry.clone(), health.clone()).await?;
    let stop = Stop::on_signals("committing the open transaction").flag();
    // HOSTNAME first: containers get a distinct one per replica (compose's `replicas: 2`).
    let instance = cli.instance_id.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|| "local".into());
        format!("scorer-{host}")
    });
    let cfg = ScorerConfig {
        kafka: cli.kafka,
        group: cli.group,
        transactional_id: format!("fraudstream-{instance}"),
        input_topic: cli.transactions_topic,
        predictions_topic: cli.predictions_topic,
        alerts_topic: cli.alerts_topic,
        dlq_topic: cli.dlq_topic,
        models_topic: cli.models_topic,
        model_name: cli.model_name,
        bootstrap_model: cli.bootstrap_model,
        bootstrap_threshold: cli.threshold,
        commit_interval: Duration::from_millis(cli.commit_interval_ms),
        max_batch: cli.max_batch,
        state_lookback: cli.state_lookback,
        partitions: cli.partitions,
        passthrough: cli.passthrough,
        stop_after: cli.stop_after,
    };
    let summary = run(cfg, metrics, health, stop).await?;
    println!(
        "scored {} transactions in {:.2}s ({:.0} tx/s): {} predictions, {} alerts, {} dead letters",
        summary.records,
        summary.busy.as_secs_f64(),
        summary.rate(),
        summary.predictions,
        summary.alerts,
        summary.dead_letters
    );
    Ok(())
}
