use anyhow::Result;
use clap::{Parser, Subcommand};
use fraudstream_common::service::Service;
use fraudstream_common::telemetry::TelemetryArgs;
use review::{serve, Metrics, ReviewConfig};
use std::io::BufRead;
use std::net::SocketAddr;

/// The analysts' review page: the queue of open alerts, each alert in detail, and the verdicts
/// (confirm fraud, dismiss) published as labels the trainer learns from. Log in with a user of
/// --users; put it behind your company's single sign-on as the README says.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the review page.
    Serve {
        #[command(flatten)]
        review: Box<ReviewConfig>,
        /// Where /metrics and /health are served (port 0: any free port).
        #[arg(
            long,
            env = "FRAUDSTREAM_METRICS_ADDR",
            default_value = "127.0.0.1:9104"
        )]
        metrics_addr: SocketAddr,
    },
    /// Read a password from stdin and print its Argon2id hash for the users file (`name:<hash>`).
    HashPassword,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let service = Service::start("review", &cli.telemetry)?;
    match cli.command {
        Command::HashPassword => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let password = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "no password on stdin");
            println!(
                "{}",
                review::auth::hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?
            );
            Ok(())
        }
        Command::Serve {
            review,
            metrics_addr,
        } => {
            fraudstream_common::check_connections(Some(&review.kafka), Some(&review.clickhouse))
                .await?;
            let metrics = Metrics::new()?;
            let at = service
                .serve(metrics_addr, metrics.registry.clone())
                .await?;
            let stop = service.stop_on_signals("closing the page's connections");
            let (bound, addr) = tokio::sync::oneshot::channel();
            let serving = tokio::spawn(async move {
                serve(&review, metrics, bound, async move { stop.stopped().await }).await
            });
            if let Ok(addr) = addr.await {
                service.health.set_ready("serving");
                println!("review page on http://{addr} (metrics on http://{at}/metrics)");
            }
            serving.await?
        }
    }
}
