use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fraudstream_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
use fraudstream_common::telemetry::{self, TelemetryArgs};
use fraudstream_schemas::{topics, ModelStatus};
use std::path::PathBuf;
use trainer::{examples_from_csv, publish_model, train, TrainParams};

/// Trains LightGBM fraud models on PaySim data and publishes them to the scorers.
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
    /// Train the first model from a historical PaySim CSV, evaluate it on a time-based holdout,
    /// write it to --out and (unless --no-publish) publish it as champion on the models topic.
    Bootstrap {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Historical CSV (time-ordered), e.g. from `producer split`.
        #[arg(long)]
        csv: PathBuf,
        /// Where to write the LightGBM model text.
        #[arg(long, default_value = "model.txt")]
        out: PathBuf,
        /// Model name (the scorers serve one name).
        #[arg(long, env = "FRAUDSTREAM_MODEL_NAME", default_value = "paysim")]
        model_name: String,
        /// The alert threshold is the lowest score reaching this precision on the holdout.
        #[arg(long, default_value_t = 0.9)]
        target_precision: f64,
        /// Most boosting rounds (early stopping usually ends sooner).
        #[arg(long, default_value_t = 300)]
        max_rounds: i64,
        /// Only train and write the file.
        #[arg(long)]
        no_publish: bool,
        #[arg(long, env = "FRAUDSTREAM_MODELS_TOPIC", default_value = topics::MODELS)]
        models_topic: String,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init("trainer", &cli.telemetry)?;
    match cli.command {
        Command::Bootstrap {
            kafka,
            csv,
            out,
            model_name,
            target_precision,
            max_rounds,
            no_publish,
            models_topic,
        } => {
            let started = std::time::Instant::now();
            let (examples, bad) = examples_from_csv(&csv)?;
            println!(
                "read {} rows ({} bad rows skipped) from {} in {:.1}s",
                examples.len(),
                bad,
                csv.display(),
                started.elapsed().as_secs_f64()
            );
            let params = TrainParams {
                target_precision,
                max_rounds,
                ..TrainParams::default()
            };
            let t0 = std::time::Instant::now();
            let trained = train(&examples, &params)?;
            let m = &trained.metrics;
            println!(
                "trained in {:.1}s ({} rounds): holdout PR-AUC {:.4}, ROC-AUC {:.4}; threshold {:.4}: precision {:.3}, recall {:.3}, {:.1} alerts per 10k",
                t0.elapsed().as_secs_f64(),
                m["rounds"],
                m["pr_auc"],
                m["roc_auc"],
                trained.threshold,
                m["precision"],
                m["recall"],
                m["alerts_per_10k"]
            );
            std::fs::write(&out, &trained.model_text)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("model written to {}", out.display());
            if !no_publish {
                ensure_topics(
                    &kafka.admin()?,
                    &[TopicSpec::new(&models_topic, 1).compacted()],
                    1,
                )
                .await?;
                let window = (examples.first_step as i64, examples.last_step as i64);
                let record = publish_model(
                    &kafka,
                    &models_topic,
                    &model_name,
                    &trained,
                    ModelStatus::Champion,
                    window,
                )
                .await?;
                println!(
                    "published {} v{} as champion on {}",
                    record.model_name, record.version, models_topic
                );
            }
        }
    }
    Ok(())
}
