use anyhow::Result;
use clap::Parser;
use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::kafka::KafkaArgs;
use fraudstream_common::server::{self, Health};
use fraudstream_common::stop::Stop;
use fraudstream_common::telemetry::{self, TelemetryArgs};
use fraudstream_schemas::topics;
use sink::metrics::SinkMetrics;
use sink::{run, Destination, SinkConfig};
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lands transactions, predictions and labels in ClickHouse, exactly once as `FINAL` reads see it.
///
/// Creates (and upgrades) its tables on start. Offsets are committed only after ClickHouse
/// acknowledged the rows; while ClickHouse is down the sink retries and waits, dropping nothing.
/// Run several instances to share the partitions (consumer group --group).
#[derive(Parser)]
// A flag given twice takes the last value (a wrapper script adding to a base command line).
#[command(version, about, args_override_self = true)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    /// Consumer group shared by all sink instances.
    #[arg(long, env = "FRAUDSTREAM_SINK_GROUP", default_value = "sink")]
    group: String,
    #[arg(long, env = "FRAUDSTREAM_TRANSACTIONS_TOPIC", default_value = topics::TRANSACTIONS)]
    transactions_topic: String,
    #[arg(long, env = "FRAUDSTREAM_PREDICTIONS_TOPIC", default_value = topics::PREDICTIONS)]
    predictions_topic: String,
    #[arg(long, env = "FRAUDSTREAM_LABELS_TOPIC", default_value = topics::LABELS)]
    labels_topic: String,
    /// Where undecodable records go, with the reason and their origin in headers.
    #[arg(long, env = "FRAUDSTREAM_SINK_DLQ_TOPIC", default_value = topics::PREDICTIONS_DLQ)]
    dlq_topic: String,
    /// Write a batch once it holds this many rows...
    #[arg(long, env = "FRAUDSTREAM_BATCH_ROWS", default_value_t = 200_000)]
    batch_rows: usize,
    /// ...or this many MiB of Kafka payload...
    #[arg(long, env = "FRAUDSTREAM_BATCH_MIB", default_value_t = 64)]
    batch_mib: usize,
    /// ...or once its first row is this many milliseconds old (bounds the delay to ClickHouse).
    #[arg(long, env = "FRAUDSTREAM_BATCH_MS", default_value_t = 1000)]
    batch_ms: u64,
    /// Longest wait between insert attempts while ClickHouse fails (ms); backoff doubles up to it.
    #[arg(long, env = "FRAUDSTREAM_MAX_BACKOFF_MS", default_value_t = 5000)]
    max_backoff_ms: u64,
    /// Partitions of the topics the sink creates if they are missing (inputs and DLQ).
    #[arg(long, env = "FRAUDSTREAM_PARTITIONS", default_value_t = 6)]
    partitions: i32,
    /// Stop cleanly once this many rows were committed (benchmarks).
    #[arg(long, hide = true)]
    stop_after: Option<u64>,
    /// Address of /metrics and /health.
    #[arg(
        long,
        env = "FRAUDSTREAM_METRICS_ADDR",
        default_value = "127.0.0.1:9103"
    )]
    metrics_addr: std::net::SocketAddr,
    #[cfg(feature = "bigquery")]
    #[command(flatten)]
    bigquery: BigQueryArgs,
}

/// BigQuery as a second destination for predictions.
#[cfg(feature = "bigquery")]
#[derive(clap::Args)]
struct BigQueryArgs {
    /// Also stream predictions into BigQuery (insertAll, insertId = transaction id).
    #[arg(long, env = "FRAUDSTREAM_BIGQUERY")]
    bigquery: bool,
    /// BigQuery project.
    #[arg(long, env = "BIGQUERY_PROJECT", required_if_eq("bigquery", "true"))]
    bigquery_project: Option<String>,
    /// BigQuery dataset.
    #[arg(long, env = "BIGQUERY_DATASET", default_value = "fraudstream")]
    bigquery_dataset: String,
    /// BigQuery table (its schema mirrors ClickHouse's predictions table).
    #[arg(long, env = "BIGQUERY_TABLE", default_value = "predictions")]
    bigquery_table: String,
    /// API root; point it at an emulator to test.
    #[arg(
        long,
        env = "BIGQUERY_ENDPOINT",
        default_value = "https://bigquery.googleapis.com"
    )]
    bigquery_endpoint: String,
    /// A fixed OAuth access token (`gcloud auth print-access-token`; it expires within the
    /// hour). Without it, Google's credential chain: GOOGLE_APPLICATION_CREDENTIALS (a
    /// service-account JSON file), application-default credentials, the GCP metadata server;
    /// those tokens are refreshed before they expire.
    #[arg(long, env = "GOOGLE_OAUTH_ACCESS_TOKEN", hide_env_values = true)]
    bigquery_token: Option<String>,
    /// Send no credentials (a BigQuery emulator).
    #[arg(long, env = "BIGQUERY_NO_AUTH", conflicts_with = "bigquery_token")]
    bigquery_no_auth: bool,
}

#[cfg(feature = "bigquery")]
impl BigQueryArgs {
    /// The BigQuery loop's destination, when --bigquery is on.
    fn destination(self) -> Option<Destination> {
        use sink::bigquery::{BigQueryAuth, BigQueryConfig};
        let auth = match (self.bigquery_token, self.bigquery_no_auth) {
            (Some(token), _) => BigQueryAuth::Token(token),
            (None, true) => BigQueryAuth::None,
            (None, false) => BigQueryAuth::Google,
        };
        self.bigquery.then(|| {
            Destination::BigQuery(BigQueryConfig {
                endpoint: self.bigquery_endpoint,
                project: self.bigquery_project.unwrap_or_default(),
                dataset: self.bigquery_dataset,
                table: self.bigquery_table,
                auth,
            })
        })
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init("sink", &cli.telemetry)?;
    fraudstream_common::check_connections(Some(&cli.kafka), Some(&cli.clickhouse)).await?;
    let metrics = Arc::new(SinkMetrics::new()?);
    let health = Health::new();
    server::serve(cli.metrics_addr, metrics.registry.clone(), health.clone()).await?;
    let stop = Stop::on_signals("writing and committing what was read").receiver();
    let cfg = SinkConfig {
        kafka: cli.kafka,
        clickhouse: cli.clickhouse,
        group: cli.group,
        transactions_topic: cli.transactions_topic,
        predictions_topic: cli.predictions_topic,
        labels_topic: cli.labels_topic,
        dlq_topic: cli.dlq_topic,
        batch_rows: cli.batch_rows,
        batch_bytes: cli.batch_mib << 20,
        batch_age: Duration::from_millis(cli.batch_ms),
        max_backoff: Duration::from_millis(cli.max_backoff_ms),
        partitions: cli.partitions,
        stop_after: cli.stop_after,
        destination: Destination::ClickHouse,
    };
    // BigQuery, when on, is a second loop in its own consumer group with its own offsets.
    #[cfg(feature = "bigquery")]
    let bigquery_loop = cli.bigquery.destination().map(|destination| {
        let bq_cfg = SinkConfig {
            group: format!("{}-bigquery", cfg.group),
            destination,
            ..cfg.clone()
        };
        let bq_metrics = metrics.alongside("sink_bigquery").map(Arc::new);
        let (bq_health, bq_stop) = (Health::new(), stop.clone());
        tokio::spawn(async move {
            match run(bq_cfg, bq_metrics?, bq_health, bq_stop).await {
                Ok(s) => tracing::info!(rows = s.rows, "BigQuery loop stopped"),
                Err(e) => tracing::error!(error = %e, "BigQuery loop stopped; ClickHouse goes on"),
            }
            Ok::<_, fraudstream_common::CommonError>(())
        })
    });
    let summary = run(cfg, metrics, health, stop).await?;
    #[cfg(feature = "bigquery")]
    if let Some(handle) = bigquery_loop {
        handle.await??;
    }
    println!(
        "landed {} rows in {} batches in {:.2}s ({:.0} rows/s); {} dead letters, {} insert retries",
        summary.rows,
        summary.batches,
        summary.busy.as_secs_f64(),
        summary.rate(),
        summary.dead_letters,
        summary.retries
    );
    Ok(())
}
