use anyhow::Result;
use clap::Parser;
use fraudstream_common::service::Service;
use fraudstream_common::telemetry::TelemetryArgs;
use sink::metrics::SinkMetrics;
use sink::{run, SinkConfig};
use std::sync::Arc;

#[global_allocator]
static GLOBAL: fraudstream_common::alloc::MiMalloc = fraudstream_common::alloc::MiMalloc;

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
    sink: SinkConfig,
    #[command(flatten)]
    telemetry: TelemetryArgs,
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
    fn destination(self) -> Option<sink::Destination> {
        use sink::bigquery::{BigQueryAuth, BigQueryConfig};
        use sink::Destination;
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

fn main() -> Result<()> {
    fraudstream_common::alloc::set_memory_options();
    tokio::runtime::Runtime::new()?.block_on(run_sink())
}

async fn run_sink() -> Result<()> {
    let cli = Cli::parse();
    let service = Service::start("sink", &cli.telemetry)?;
    fraudstream_common::check_connections(Some(&cli.sink.kafka), Some(&cli.sink.clickhouse))
        .await?;
    let metrics = Arc::new(SinkMetrics::new()?);
    service
        .serve(cli.metrics_addr, metrics.registry.clone())
        .await?;
    let stop = service
        .stop_on_signals("writing and committing what was read")
        .receiver();
    let cfg = cli.sink;
    // BigQuery, when on, is a second loop in its own consumer group with its own offsets.
    #[cfg(feature = "bigquery")]
    let bigquery_loop = cli.bigquery.destination().map(|destination| {
        let bq_cfg = SinkConfig {
            group: format!("{}-bigquery", cfg.group),
            destination,
            ..cfg.clone()
        };
        let bq_metrics = metrics.alongside("sink_bigquery").map(Arc::new);
        let (bq_health, bq_stop) = (fraudstream_common::server::Health::new(), stop.clone());
        tokio::spawn(async move {
            match run(bq_cfg, bq_metrics?, bq_health, bq_stop).await {
                Ok(s) => tracing::info!(rows = s.rows, "BigQuery loop stopped"),
                Err(e) => tracing::error!(error = %e, "BigQuery loop stopped; ClickHouse goes on"),
            }
            Ok::<_, fraudstream_common::CommonError>(())
        })
    });
    let summary = run(cfg, metrics, service.health.clone(), stop).await?;
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
