mod commands;
mod rule_commands;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
use fraudstream_common::service::Service;
use fraudstream_common::telemetry::TelemetryArgs;
use fraudstream_schemas::{topics, ModelStatus};
use std::path::PathBuf;
use trainer::registry;
use trainer::{Publisher, Selection, ThresholdRule, TrainParams};

/// Trains LightGBM fraud models, gates them against the serving champion and publishes them to
/// the scorers (compacted models topic) and the ClickHouse archive.
///
/// Typical flow: `bootstrap` once from the historical CSV, then `watch` retrains from ClickHouse
/// as labels arrive. `list`, `show`, `promote` and `rollback` manage the versions.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where models go and come from.
#[derive(Args, Clone)]
struct Target {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Model name (the scorers serve one name).
    #[arg(long, env = "FRAUDSTREAM_MODEL_NAME", default_value = "paysim")]
    model_name: String,
    #[arg(long, env = "FRAUDSTREAM_MODELS_TOPIC", default_value = topics::MODELS)]
    models_topic: String,
}

/// How to train, choose the threshold and gate.
#[derive(Args, Clone)]
struct Training {
    /// Threshold rule: the lowest score whose holdout precision reaches this (most recall). When
    /// none does, at most 10 alerts per 10,000 transactions.
    #[arg(
        long,
        default_value_t = 0.9,
        conflicts_with = "alert_budget",
        env = "FRAUDSTREAM_TARGET_PRECISION"
    )]
    target_precision: f64,
    /// Threshold rule instead: this many alerts per 10,000 transactions on the holdout.
    #[arg(long, env = "FRAUDSTREAM_ALERT_BUDGET")]
    alert_budget: Option<f64>,
    /// Most boosting rounds. Early stopping on the validation split's PR-AUC usually ends sooner;
    /// with fewer than 100 frauds in that split it cannot judge, and all rounds are trained.
    #[arg(long, default_value_t = 300, env = "FRAUDSTREAM_MAX_ROUNDS")]
    max_rounds: i64,
    /// Gate: the candidate replaces the champion when its holdout PR-AUC is at least the
    /// champion's on the same rows minus this, and the holdout holds at least 100 frauds (on
    /// fewer the two cannot be told apart, and the champion stays).
    #[arg(long, default_value_t = 0.0, env = "FRAUDSTREAM_GATE_TOLERANCE")]
    tolerance: f64,
    /// A candidate that fails the gate is published as challenger (scored in shadow) unless this.
    #[arg(long, env = "FRAUDSTREAM_NO_CHALLENGER")]
    no_challenger: bool,
    /// Skip the gate: the candidate becomes champion.
    #[arg(long, env = "FRAUDSTREAM_FORCE_PUBLISH")]
    force: bool,
    /// Write the evaluation report to <STEM>.json and <STEM>.html.
    #[arg(long, default_value = "reports/model", env = "FRAUDSTREAM_REPORT")]
    report: PathBuf,
    /// Train and report only; publish nothing.
    #[arg(long, env = "FRAUDSTREAM_NO_PUBLISH")]
    no_publish: bool,
}

impl Training {
    fn params(&self) -> TrainParams {
        TrainParams {
            max_rounds: self.max_rounds,
            threshold_rule: match self.alert_budget {
                Some(b) => ThresholdRule::AlertBudget(b),
                None => ThresholdRule::Precision(self.target_precision),
            },
            progress: true,
            ..TrainParams::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train the first model from a historical PaySim CSV (time-ordered, e.g. from `producer
    /// split`), write it to --out and publish it through the gate.
    Bootstrap {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        training: Training,
        /// Historical CSV.
        #[arg(long)]
        csv: PathBuf,
        /// Where to write the LightGBM model text.
        #[arg(long, default_value = "model.txt")]
        out: PathBuf,
        /// Do nothing when the models topic already has a champion for --model-name (an init
        /// step that runs on every start, e.g. compose's `init`).
        #[arg(long)]
        if_no_champion: bool,
    },
    /// Train from ClickHouse: labelled transactions (the sink's transactions joined with labels),
    /// the newest --limit rows, optionally within an event-time window.
    Train {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        training: Training,
        /// Newest labelled rows to train on.
        #[arg(long, default_value_t = 1_000_000)]
        limit: u64,
        /// Only rows with event time at or after this (`YYYY-MM-DD hh:mm:ss`).
        #[arg(long)]
        since: Option<String>,
        /// Only rows with event time before this (`YYYY-MM-DD hh:mm:ss`).
        #[arg(long)]
        until: Option<String>,
        /// Label maturity: leave out transactions younger than this (event time, counted back
        /// from the newest transaction in ClickHouse), whose labels may still be on the way. A
        /// transaction without a label is never a negative; but where frauds are reported within
        /// a dispute window and legitimate ones confirmed at its end (`producer publish
        /// --label-delay 2..24steps`), the young labelled rows are mostly frauds, and training on
        /// them skews the model. Set it to the window (e.g. 24h; 30s, 10m, 2d). 0 = off.
        #[arg(long, env = "FRAUDSTREAM_LABEL_MATURITY", default_value = "0s",
              value_parser = fraudstream_common::args::duration)]
        label_maturity: std::time::Duration,
    },
    /// Poll ClickHouse; retrain and publish (through the gate) when enough new labelled rows
    /// arrived. Thresholds come from --config, re-read every cycle.
    Watch {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        training: Training,
        /// JSON config {"min_rows", "limit", "poll_seconds"}; created with defaults if missing.
        #[arg(
            long,
            env = "FRAUDSTREAM_WATCH_CONFIG",
            default_value = "trainer-watch.json"
        )]
        config: PathBuf,
        /// Progress persisted across restarts.
        #[arg(
            long,
            env = "FRAUDSTREAM_WATCH_STATE",
            default_value = "trainer-state.json"
        )]
        state: PathBuf,
        /// Stop after this many trainings (demos, tests).
        #[arg(long, env = "FRAUDSTREAM_MAX_TRAININGS")]
        max_trainings: Option<u64>,
        /// Label maturity: leave out transactions younger than this (event time, counted back
        /// from the newest transaction in ClickHouse), whose labels may still be on the way. A
        /// transaction without a label is never a negative; but where frauds are reported within
        /// a dispute window and legitimate ones confirmed at its end (`producer publish
        /// --label-delay 2..24steps`), the young labelled rows are mostly frauds, and training on
        /// them skews the model. Set it to the window (e.g. 24h; 30s, 10m, 2d). 0 = off.
        #[arg(long, env = "FRAUDSTREAM_LABEL_MATURITY", default_value = "0s",
              value_parser = fraudstream_common::args::duration)]
        label_maturity: std::time::Duration,

        /// Serve /metrics and /health here (e.g. 127.0.0.1:9104; port 0 picks a free one).
        #[arg(long, env = "FRAUDSTREAM_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Write the feature matrix of a PaySim CSV (the scorer's own feature code, rows in time
    /// order, one column per feature, then is_fraud), to train a model elsewhere: see
    /// scripts/python-train.py, then `trainer import`.
    Features {
        /// PaySim CSV, time-ordered.
        #[arg(long)]
        csv: PathBuf,
        /// Where to write the feature CSV.
        #[arg(long)]
        out: PathBuf,
    },
    /// Publish a LightGBM model trained elsewhere, through the same gate: its text must name the
    /// scorer's features (any order: the scorer maps them by name) or list them in its order.
    /// It is evaluated on the holdout (last 10%) of --csv; its threshold follows --target-precision.
    Import {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        training: Training,
        /// The LightGBM model text (e.g. `booster.save_model(...)` in Python).
        #[arg(long)]
        model: PathBuf,
        /// The PaySim CSV whose last 10% (in time) is the holdout.
        #[arg(long)]
        csv: PathBuf,
    },
    /// Score an archived version on the labelled transactions in ClickHouse, as it would have
    /// scored them live (a backtest: per-account history rebuilt in event order): PR-AUC, and
    /// precision and recall at its threshold, overall and on the rows matching --focus.
    Evaluate {
        #[command(flatten)]
        target: Target,
        version: i32,
        /// Newest labelled rows to score.
        #[arg(long, default_value_t = 1_000_000)]
        limit: u64,
        /// Also report on the rows matching this SQL condition on labelled_transactions, e.g.
        /// "type = 'TRANSFER' AND amount <= 20" (history is still built from every row).
        #[arg(long)]
        focus: Option<String>,
    },
    /// Every archived version of the model, with its status and holdout metrics.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// One version in detail: metrics, threshold, features, history.
    Show {
        #[command(flatten)]
        target: Target,
        version: i32,
    },
    /// Make an archived version the champion (the scorers swap to it).
    Promote {
        #[command(flatten)]
        target: Target,
        version: i32,
    },
    /// Serve the previous champion again.
    Rollback {
        #[command(flatten)]
        target: Target,
    },
    /// Analyst rules next to the model: CEL conditions over a transaction's fields, the model's
    /// features and its score, published on the compacted rules topic; every scorer applies a
    /// change between two batches. alert = (model alert OR an ALERT rule) AND NOT a SUPPRESS rule.
    Rules {
        #[command(flatten)]
        target: rule_commands::RulesTarget,
        #[command(subcommand)]
        command: rule_commands::RulesCommand,
    },
}

impl Command {
    /// Where the subcommand reads and publishes (None: it works on files only).
    fn target(&self) -> Option<&Target> {
        Some(match self {
            Command::Features { .. } | Command::Rules { .. } => return None,
            Command::Bootstrap { target, .. }
            | Command::Import { target, .. }
            | Command::Evaluate { target, .. }
            | Command::Train { target, .. }
            | Command::Watch { target, .. }
            | Command::List { target }
            | Command::Show { target, .. }
            | Command::Promote { target, .. }
            | Command::Rollback { target } => target,
        })
    }
}

impl Target {
    /// Publishes an archived version as champion again (the scorers swap to it) and logs `event`.
    async fn serve_again(&self, row: &registry::ArchiveRow, event: &str) -> Result<()> {
        let record = row.to_record(ModelStatus::Champion);
        registry::send_record(&self.kafka, &self.models_topic, &record).await?;
        registry::archive(&self.clickhouse, &record, event).await?;
        Ok(())
    }

    async fn publisher(&self, training: &Training, archive: bool) -> Result<Publisher> {
        ensure_topics(
            &self.kafka.admin()?,
            &[TopicSpec::new(&self.models_topic, 1).compacted()],
        )
        .await?;
        let clickhouse = if archive {
            self.clickhouse.migrate().await.with_context(|| {
                format!(
                    "ClickHouse at {} (is it running? set CLICKHOUSE_URL)",
                    self.clickhouse.url
                )
            })?;
            Some(self.clickhouse.clone())
        } else {
            None
        };
        Ok(Publisher {
            kafka: self.kafka.clone(),
            models_topic: self.models_topic.clone(),
            clickhouse,
            model_name: self.model_name.clone(),
            tolerance: training.tolerance,
            challenger_on_reject: !training.no_challenger,
            force: training.force,
        })
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let service = Service::start("trainer", &cli.telemetry)?;
    if let Some(target) = cli.command.target() {
        fraudstream_common::check_connections(Some(&target.kafka), Some(&target.clickhouse))
            .await?;
    }
    match &cli.command {
        Command::Bootstrap {
            target,
            training,
            csv,
            out,
            if_no_champion,
        } => commands::bootstrap(target, training, csv, out, *if_no_champion).await,
        Command::Train {
            target,
            training,
            limit,
            since,
            until,
            label_maturity,
        } => {
            let selection = Selection {
                limit: *limit,
                since: since.clone(),
                until: until.clone(),
                maturity: *label_maturity,
                focus: None,
            };
            commands::train_from_clickhouse(target, training, selection).await
        }
        Command::Watch {
            target,
            training,
            config,
            state,
            max_trainings,
            metrics_addr,
            label_maturity,
        } => {
            let watch = commands::Watch {
                config,
                state,
                maturity: *label_maturity,
                max_trainings: *max_trainings,
                metrics_addr: *metrics_addr,
            };
            commands::watch(&service, target, training, &watch).await
        }
        Command::Features { csv, out } => commands::features(csv, out),
        Command::Import {
            target,
            training,
            model,
            csv,
        } => commands::import(target, training, model, csv).await,
        Command::Evaluate {
            target,
            version,
            limit,
            focus,
        } => {
            let selection = Selection {
                limit: *limit,
                focus: focus.clone(),
                ..Selection::default()
            };
            commands::evaluate(target, *version, selection).await
        }
        Command::List { target } => commands::list(target).await,
        Command::Show { target, version } => commands::show(target, *version).await,
        Command::Promote { target, version } => commands::promote(target, *version).await,
        Command::Rollback { target } => commands::rollback(target).await,
        Command::Rules { target, command } => {
            fraudstream_common::check_connections(Some(&target.kafka), Some(&target.clickhouse))
                .await?;
            rule_commands::run(target, command).await
        }
    }
}
