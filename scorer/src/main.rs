use anyhow::Result;
use clap::Parser;
use fraudstream_common::service::Service;
use fraudstream_common::telemetry::TelemetryArgs;
use scorer::metrics::ScorerMetrics;
use scorer::{run, ScorerConfig};
use std::sync::Arc;

#[global_allocator]
static GLOBAL: fraudstream_common::alloc::MiMalloc = fraudstream_common::alloc::MiMalloc;

/// Scores every transaction with the LightGBM champion, exactly once, and raises alerts.
///
/// Run as many instances as the input topic has partitions; they share the work through the
/// consumer group. Each needs its own --instance-id (stable across restarts).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    scorer: ScorerConfig,
    #[command(flatten)]
    telemetry: TelemetryArgs,
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
    fraudstream_common::alloc::set_memory_options();
    tokio::runtime::Runtime::new()?.block_on(run_scorer())
}

async fn run_scorer() -> Result<()> {
    let cli = Cli::parse();
    let service = Service::start("scorer", &cli.telemetry)?;
    fraudstream_common::check_connections(Some(&cli.scorer.kafka), None).await?;
    fraudstream_common::model::limit_threads(cli.lightgbm_threads);
    fraudstream_common::model::use_native_trees(!cli.lightgbm_predict);
    let metrics = Arc::new(ScorerMetrics::new()?);
    service
        .serve(cli.metrics_addr, metrics.registry.clone())
        .await?;
    let stop = service
        .stop_on_signals("committing the open transaction")
        .flag();
    let summary = run(cli.scorer, metrics, service.health.clone(), stop).await?;
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
