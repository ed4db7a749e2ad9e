use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
use fraudstream_common::telemetry::{self, TelemetryArgs};
use fraudstream_schemas::{topics, ModelStatus};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use trainer::registry::{self, status_name};
use trainer::report::{self, ReportContext};
use trainer::watch::{WatchConfig, WatchState};
use trainer::{
    count_labelled, examples_from_clickhouse, examples_from_csv, train, Examples, Outcome,
    Publisher, Selection, ThresholdRule, TrainParams,
};

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
    /// Threshold rule: the lowest score whose holdout precision reaches this (most recall).
    #[arg(long, default_value_t = 0.9, conflicts_with = "alert_budget")]
    target_precision: f64,
    /// Threshold rule instead: this many alerts per 10,000 transactions on the holdout.
    #[arg(long)]
    alert_budget: Option<f64>,
    /// Most boosting rounds (early stopping on the validation split usually ends sooner).
    #[arg(long, default_value_t = 300)]
    max_rounds: i64,
    /// Gate: the candidate replaces the champion when its holdout PR-AUC is at least the
    /// champion's on the same rows minus this.
    #[arg(long, default_value_t = 0.0)]
    tolerance: f64,
    /// A candidate that fails the gate is published as challenger (scored in shadow) unless this.
    #[arg(long)]
    no_challenger: bool,
    /// Skip the gate: the candidate becomes champion.
    #[arg(long)]
    force: bool,
    /// Write the evaluation report to <STEM>.json and <STEM>.html.
    #[arg(long, default_value = "reports/model")]
    report: PathBuf,
    /// Train and report only; publish nothing.
    #[arg(long)]
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
        #[arg(long)]
        max_trainings: Option<u64>,
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
}

impl Command {
    /// Where every subcommand reads and publishes.
    fn target(&self) -> &Target {
        match self {
            Command::Bootstrap { target, .. }
            | Command::Train { target, .. }
            | Command::Watch { target, .. }
            | Command::List { target }
            | Command::Show { target, .. }
            | Command::Promote { target, .. }
            | Command::Rollback { target } => target,
        }
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
            1,
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

/// Trains on `ex`, reports, gates and publishes. Prints what happened.
async fn train_and_publish(
    ex: &Examples,
    source: &str,
    training: &Training,
    publisher: Option<&Publisher>,
) -> Result<(trainer::Trained, Option<Outcome>)> {
    let started = Instant::now();
    let trained = train(ex, &training.params())?;
    let m = &trained.metrics;
    println!(
        "trained in {:.1}s ({} rounds): holdout PR-AUC {:.4}, ROC-AUC {:.4}; threshold {}: precision {:.3}, recall {:.3}, {:.1} alerts per 10k",
        started.elapsed().as_secs_f64(),
        m["rounds"],
        m["pr_auc"],
        m["roc_auc"],
        show_threshold(trained.threshold),
        m["precision"],
        m["recall"],
        m["alerts_per_10k"]
    );
    let outcome = match publisher {
        Some(p) if !training.no_publish => Some(p.gate_and_publish(&trained, ex).await?),
        _ => None,
    };
    if let Some(o) = &outcome {
        let d = &o.decision;
        let against = d
            .champion_pr_auc
            .map_or("no champion yet".to_string(), |c| {
                format!("champion PR-AUC {c:.4} on the same holdout")
            });
        match &o.record {
            Some(r) => println!(
                "gate: candidate {:.4} vs {against} → published {} v{} as {}",
                d.candidate_pr_auc,
                r.model_name,
                r.version,
                status_name(r.status)
            ),
            None => println!(
                "gate: candidate {:.4} vs {against} → not published (--no-challenger)",
                d.candidate_pr_auc
            ),
        }
    }
    let ctx = ReportContext {
        model_name: publisher.map_or("paysim", |p| p.model_name.as_str()),
        version: outcome
            .as_ref()
            .and_then(|o| o.record.as_ref().map(|r| r.version)),
        source,
        gate: outcome.as_ref().map(|o| &o.decision),
    };
    let (json, html) = report::write(&trained, &ctx, &training.report)?;
    println!("report: {html} (and {json})");
    Ok((trained, outcome))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init("trainer", &cli.telemetry)?;
    let target = cli.command.target();
    fraudstream_common::check_connections(Some(&target.kafka), Some(&target.clickhouse)).await?;
    match cli.command {
        Command::Bootstrap {
            target,
            training,
            csv,
            out,
            if_no_champion,
        } => {
            if if_no_champion {
                let ensure = [TopicSpec::new(&target.models_topic, 1).compacted()];
                ensure_topics(&target.kafka.admin()?, &ensure, 1).await?;
                let records = registry::read_models(&target.kafka, &target.models_topic).await?;
                if let Some(c) =
                    registry::serving(&records, &target.model_name, ModelStatus::Champion)
                {
                    println!(
                        "{} v{} is already champion on {}: nothing to bootstrap",
                        c.model_name, c.version, target.models_topic
                    );
                    return Ok(());
                }
            }
            let started = Instant::now();
            let (examples, bad) = examples_from_csv(&csv)?;
            println!(
                "read {} rows ({} bad rows skipped) from {} in {:.1}s",
                examples.len(),
                bad,
                csv.display(),
                started.elapsed().as_secs_f64()
            );
            // The archive is optional here: a first model can be made before ClickHouse is up.
            let archive = !training.no_publish && target.clickhouse.migrate().await.is_ok();
            if !archive && !training.no_publish {
                eprintln!("note: ClickHouse at {} is not reachable; publishing to the topic only (not archived)", target.clickhouse.url);
            }
            let publisher = if training.no_publish {
                None
            } else {
                Some(target.publisher(&training, archive).await?)
            };
            let source = format!("{} ({} rows)", csv.display(), examples.len());
            let (trained, _) =
                train_and_publish(&examples, &source, &training, publisher.as_ref()).await?;
            std::fs::write(&out, &trained.model_text)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("model written to {}", out.display());
        }
        Command::Train {
            target,
            training,
            limit,
            since,
            until,
        } => {
            let publisher = target.publisher(&training, true).await?;
            let sel = Selection {
                limit,
                since,
                until,
            };
            let started = Instant::now();
            let ex = examples_from_clickhouse(&target.clickhouse, &sel).await?;
            println!(
                "read {} labelled rows ({} fraud) from ClickHouse in {:.1}s",
                ex.len(),
                ex.labels.iter().filter(|l| **l > 0.5).count(),
                started.elapsed().as_secs_f64()
            );
            let source = format!(
                "ClickHouse {}.labelled_transactions, newest {} rows",
                target.clickhouse.database,
                ex.len()
            );
            train_and_publish(&ex, &source, &training, Some(&publisher)).await?;
        }
        Command::Watch {
            target,
            training,
            config,
            state,
            max_trainings,
        } => {
            let publisher = target.publisher(&training, true).await?;
            let mut st = WatchState::load(&state)?;
            println!(
                "watching {} (config {}, state {}: last count {}, last version {:?})",
                target.clickhouse.database,
                config.display(),
                state.display(),
                st.last_count,
                st.last_version
            );
            let stop = fraudstream_common::shutdown_signal();
            tokio::pin!(stop);
            let mut done = 0u64;
            loop {
                let cfg = WatchConfig::load_or_create(&config)?;
                match count_labelled(&target.clickhouse).await {
                    Ok(count) if st.due(count, &cfg) => {
                        println!(
                            "{} new labelled rows (min_rows {}): retraining on the newest {}",
                            count - st.last_count,
                            cfg.min_rows,
                            cfg.limit
                        );
                        let ex = examples_from_clickhouse(
                            &target.clickhouse,
                            &Selection {
                                limit: cfg.limit,
                                ..Selection::default()
                            },
                        )
                        .await?;
                        let source = format!(
                            "ClickHouse {}.labelled_transactions, newest {} rows",
                            target.clickhouse.database,
                            ex.len()
                        );
                        match train_and_publish(&ex, &source, &training, Some(&publisher)).await {
                            Ok((_, outcome)) => {
                                st.last_version = outcome
                                    .and_then(|o| o.record.map(|r| r.version))
                                    .or(st.last_version);
                                st.last_count = count;
                                st.trainings += 1;
                                st.save(&state)?;
                                done += 1;
                                if max_trainings.is_some_and(|m| done >= m) {
                                    break;
                                }
                            }
                            // E.g. no fraud yet in one of the time splits: the count is not
                            // advanced, so the next cycle tries again with the rows that arrived.
                            Err(e) => eprintln!("training skipped, retrying next cycle: {e:#}"),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "counting labelled rows failed; retrying next cycle")
                    }
                }
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(Duration::from_secs_f64(cfg.poll_seconds.max(0.1))) => {}
                }
            }
        }
        Command::List { target } => {
            let history = registry::history(&target.clickhouse, &target.model_name).await?;
            let records = trainer::read_models(&target.kafka, &target.models_topic).await?;
            let serving = |s| registry::serving(&records, &target.model_name, s).map(|r| r.version);
            let (champion, challenger) = (
                serving(ModelStatus::Champion),
                serving(ModelStatus::Challenger),
            );
            println!(
                "{:>7}  {:<10}  {:<19}  {:>7}  {:>7}  {:>11}  {:>10}  serving",
                "version",
                "status",
                "created (UTC)",
                "PR-AUC",
                "ROC-AUC",
                "threshold",
                "train rows"
            );
            for r in registry::latest_per_version(&history) {
                let now = if Some(r.version) == champion {
                    "champion"
                } else if Some(r.version) == challenger {
                    "challenger (shadow)"
                } else {
                    ""
                };
                println!(
                    "{:>7}  {:<10}  {:<19}  {:>7.4}  {:>7.4}  {:>11}  {:>10}  {now}",
                    r.version,
                    r.status,
                    utc(r.created_at),
                    r.pr_auc,
                    r.roc_auc,
                    show_threshold(r.threshold),
                    r.train_rows
                );
            }
            if history.is_empty() {
                println!(
                    "(no archived versions of {} in {})",
                    target.model_name, target.clickhouse.database
                );
            }
        }
        Command::Show { target, version } => {
            let history = registry::history(&target.clickhouse, &target.model_name).await?;
            let events: Vec<_> = history.iter().filter(|r| r.version == version).collect();
            let Some(latest) = events.last() else {
                bail!(
                    "{} v{version} is not in the archive (see `trainer list`)",
                    target.model_name
                );
            };
            println!(
                "{} v{version}: {} (created {} UTC)",
                latest.model_name,
                latest.status,
                utc(latest.created_at)
            );
            println!(
                "threshold {}; training window {} .. {}",
                show_threshold(latest.threshold),
                latest.training_window_start,
                latest.training_window_end
            );
            let metrics: serde_json::Value =
                serde_json::from_str(&latest.metrics_json).unwrap_or_default();
            println!("metrics: {}", serde_json::to_string_pretty(&metrics)?);
            println!(
                "features ({}): {}",
                latest.feature_names.len(),
                latest.feature_names.join(", ")
            );
            for e in events {
                println!(
                    "  {} UTC  {:<12} as {}",
                    utc(e.archived_at),
                    e.event,
                    e.status
                );
            }
        }
        Command::Promote { target, version } => {
            let history = registry::history(&target.clickhouse, &target.model_name).await?;
            let Some(row) = history.iter().rev().find(|r| r.version == version) else {
                bail!(
                    "{} v{version} is not in the archive (see `trainer list`)",
                    target.model_name
                );
            };
            target.serve_again(row, "promoted").await?;
            println!(
                "promoted {} v{version} to champion on {}",
                target.model_name, target.models_topic
            );
        }
        Command::Rollback { target } => {
            let history = registry::history(&target.clickhouse, &target.model_name).await?;
            let Some(previous) = registry::previous_champion(&history) else {
                bail!(
                    "{} has had only one champion: nothing to roll back to",
                    target.model_name
                );
            };
            target.serve_again(previous, "rolled-back").await?;
            println!(
                "rolled back: {} v{} is champion again",
                target.model_name, previous.version
            );
        }
    }
    Ok(())
}

/// `YYYY-MM-DD hh:mm:ss` for Unix seconds (UTC), without a date library.
fn utc(secs: u32) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
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

/// A threshold as people read it: 4 decimals, unless that would show 0 or 1 for one that is not
/// (on separable data a model's threshold can be 0.99999997 or 4.2e-5).
fn show_threshold(t: f64) -> String {
    match format!("{t:.4}") {
        s if s == "0.0000" && t != 0.0 => format!("{t:.2e}"),
        s if s == "1.0000" && t != 1.0 => format!("{t:.9}"),
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::show_threshold;

    #[test]
    fn thresholds_never_show_as_0_or_1_unless_they_are() {
        assert_eq!(show_threshold(0.5), "0.5000");
        assert_eq!(show_threshold(1.0), "1.0000");
        assert_eq!(show_threshold(0.0), "0.0000");
        assert_eq!(show_threshold(0.9999999724197927), "0.999999972");
        assert_eq!(show_threshold(0.000042378736443703844), "4.24e-5");
    }
}
