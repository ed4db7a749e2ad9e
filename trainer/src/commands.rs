//! What each `trainer` subcommand does, one function each (`main.rs` parses the command line).

use crate::{Target, Training};
use anyhow::{bail, Context, Result};
use fraudstream_common::kafka::{ensure_topics, TopicSpec};
use fraudstream_common::server::Registrar;
use fraudstream_common::service::Service;
use fraudstream_schemas::ModelStatus;
use std::path::Path;
use std::time::{Duration, Instant};
use trainer::registry::{self, status_name};
use trainer::report::{self, ReportContext};
use trainer::watch::{WatchConfig, WatchState};
use trainer::{
    count_labelled, examples_from_clickhouse, examples_from_csv, train, Examples, Outcome,
    Publisher, Selection,
};

/// `trainer bootstrap`: from a CSV, to the models topic (and the archive when ClickHouse is up).
pub(crate) async fn bootstrap(
    target: &Target,
    training: &Training,
    csv: &Path,
    out: &Path,
    if_no_champion: bool,
) -> Result<()> {
    if if_no_champion {
        let ensure = [TopicSpec::new(&target.models_topic, 1).compacted()];
        ensure_topics(&target.kafka.admin()?, &ensure).await?;
        let records = registry::read_models(&target.kafka, &target.models_topic).await?;
        if let Some(c) = registry::serving(&records, &target.model_name, ModelStatus::Champion) {
            println!(
                "{} v{} is already champion on {}: nothing to bootstrap",
                c.model_name, c.version, target.models_topic
            );
            return Ok(());
        }
    }
    let started = Instant::now();
    let (examples, bad) = examples_from_csv(csv)?;
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
        eprintln!(
            "note: ClickHouse at {} is not reachable; publishing to the topic only (not archived)",
            target.clickhouse.url
        );
    }
    let publisher = if training.no_publish {
        None
    } else {
        Some(target.publisher(training, archive).await?)
    };
    let source = format!("{} ({} rows)", csv.display(), examples.len());
    let (trained, _) = train_and_publish(&examples, &source, training, publisher.as_ref()).await?;
    std::fs::write(out, &trained.model_text)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("model written to {}", out.display());
    Ok(())
}

/// `trainer train`: from the labelled rows in ClickHouse.
pub(crate) async fn train_from_clickhouse(
    target: &Target,
    training: &Training,
    selection: Selection,
) -> Result<()> {
    let publisher = target.publisher(training, true).await?;
    let started = Instant::now();
    let ex = examples_from_clickhouse(&target.clickhouse, &selection).await?;
    println!(
        "read {} labelled rows ({} fraud) from ClickHouse in {:.1}s",
        ex.len(),
        ex.labels.iter().filter(|l| **l > 0.5).count(),
        started.elapsed().as_secs_f64()
    );
    report_immature(&target.clickhouse, selection.maturity).await?;
    let source = format!(
        "ClickHouse {}.labelled_transactions, newest {} rows",
        target.clickhouse.database,
        ex.len()
    );
    train_and_publish(&ex, &source, training, Some(&publisher)).await?;
    Ok(())
}

/// Says what --label-maturity left out.
async fn report_immature(
    ch: &fraudstream_common::clickhouse::ClickHouseArgs,
    maturity: Duration,
) -> Result<()> {
    if maturity.is_zero() {
        return Ok(());
    }
    let young = trainer::immature(ch, maturity).await?;
    println!(
        "label maturity {}s: left out the {} transactions younger than that ({} labelled so far, {} of them fraud)",
        maturity.as_secs_f64(),
        young.transactions,
        young.labelled,
        young.frauds
    );
    Ok(())
}

/// `trainer list`: every archived version, with what it is now.
pub(crate) async fn list(target: &Target) -> Result<()> {
    let history = registry::history(&target.clickhouse, &target.model_name).await?;
    let records = trainer::read_models(&target.kafka, &target.models_topic).await?;
    let serving = |s| registry::serving(&records, &target.model_name, s).map(|r| r.version);
    let (champion, challenger) = (
        serving(ModelStatus::Champion),
        serving(ModelStatus::Challenger),
    );
    println!(
        "{:>7}  {:<10}  {:<19}  {:>7}  {:>7}  {:>11}  {:>10}  published as",
        "version", "status", "created (UTC)", "PR-AUC", "ROC-AUC", "threshold", "train rows"
    );
    for r in registry::latest_per_version(&history) {
        // What the version is now (the models topic), not what it was when archived.
        let now = if Some(r.version) == champion {
            "champion"
        } else if Some(r.version) == challenger {
            "challenger"
        } else {
            "retired"
        };
        let published = history
            .iter()
            .find(|e| e.version == r.version)
            .map_or("", |e| e.status.as_str());
        println!(
            "{:>7}  {:<10}  {:<19}  {:>7.4}  {:>7.4}  {:>11}  {:>10}  {published}",
            r.version,
            now,
            fraudstream_common::utc_datetime(r.created_at),
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
    Ok(())
}

/// `trainer evaluate`: an archived version scored on the labelled transactions in ClickHouse, as
/// it would have scored them live (a backtest), overall and on the --focus rows.
pub(crate) async fn evaluate(target: &Target, version: i32, selection: Selection) -> Result<()> {
    let history = registry::history(&target.clickhouse, &target.model_name).await?;
    let row = registry::latest_per_version(&history)
        .into_iter()
        .find(|r| r.version == version)
        .with_context(|| {
            format!(
                "{} v{version} is not in the archive of {}: see `trainer list`",
                target.model_name, target.clickhouse.database
            )
        })?;
    let model =
        fraudstream_common::model::LoadedModel::from_record(&row.to_record(ModelStatus::Retired))?;
    let ex = examples_from_clickhouse(&target.clickhouse, &selection).await?;
    let scores = model.predict(&ex.rows)?;
    let labels: Vec<bool> = ex.labels.iter().map(|l| *l > 0.5).collect();
    let line = |what: &str, scores: &[f64], labels: &[bool]| {
        let m = trainer::evaluate(scores, labels, row.threshold);
        let frauds = m["tp"] + m["fn"];
        println!(
            "{what}: {} rows, {frauds} fraud; caught {} of {frauds} (recall {:.3}), {} alerts (precision {:.3}), PR-AUC {:.4}",
            scores.len(),
            m["tp"],
            m["recall"],
            m["tp"] + m["fp"],
            m["precision"],
            m["pr_auc"]
        );
    };
    println!(
        "{} v{version} (threshold {}) on ClickHouse {}.labelled_transactions",
        target.model_name,
        show_threshold(row.threshold),
        target.clickhouse.database
    );
    line("all", &scores, &labels);
    if let Some(focus) = &selection.focus {
        let (fs, fl): (Vec<f64>, Vec<bool>) = ex
            .focus
            .iter()
            .zip(scores.iter().zip(&labels))
            .filter(|(f, _)| **f)
            .map(|(_, (s, l))| (*s, *l))
            .unzip();
        line(&format!("focus ({focus})"), &fs, &fl);
    }
    Ok(())
}

/// `trainer show`: one version in detail.
pub(crate) async fn show(target: &Target, version: i32) -> Result<()> {
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
        fraudstream_common::utc_datetime(latest.created_at)
    );
    println!(
        "threshold {}; training window {} .. {}",
        show_threshold(latest.threshold),
        latest.training_window_start,
        latest.training_window_end
    );
    let metrics: serde_json::Value = serde_json::from_str(&latest.metrics_json).unwrap_or_default();
    println!("metrics: {}", serde_json::to_string_pretty(&metrics)?);
    println!(
        "features ({}): {}",
        latest.feature_names.len(),
        latest.feature_names.join(", ")
    );
    for e in events {
        println!(
            "  {} UTC  {:<12} as {}",
            fraudstream_common::utc_datetime(e.archived_at),
            e.event,
            e.status
        );
    }
    Ok(())
}

/// `trainer promote`: an archived version becomes champion.
pub(crate) async fn promote(target: &Target, version: i32) -> Result<()> {
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
    Ok(())
}

/// `trainer rollback`: the previous champion again.
pub(crate) async fn rollback(target: &Target) -> Result<()> {
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
    Ok(())
}

/// What `trainer watch` was told, besides where and how to train.
pub(crate) struct Watch<'a> {
    pub(crate) config: &'a Path,
    pub(crate) state: &'a Path,
    pub(crate) maturity: Duration,
    pub(crate) max_trainings: Option<u64>,
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
}

/// The watcher's `/metrics` (`trainer_*`) and `/health`.
struct WatchMetrics {
    trainings: prometheus::IntCounter,
    failures: prometheus::IntCounter,
    last_version: prometheus::IntGauge,
}

impl WatchMetrics {
    async fn serve(service: &Service, addr: Option<std::net::SocketAddr>) -> Result<Self> {
        let r = Registrar::new("trainer")?;
        let m = WatchMetrics {
            trainings: r.counter("trainings_total", "Trainings done by watch")?,
            failures: r.counter(
                "cycle_failures_total",
                "Watch cycles that failed (retried at the next one)",
            )?,
            last_version: r.gauge("last_version", "Version published by the last training")?,
        };
        if let Some(addr) = addr {
            service.serve(addr, r.registry).await?;
        }
        Ok(m)
    }
}

/// `trainer watch`: a cycle every `poll_seconds` until stopped or `max_trainings` reached. A
/// failed cycle (ClickHouse restarting, no fraud yet in a time split) is logged, counted and
/// tried again next time (`/health` says why meanwhile); the watcher only stops on a config or
/// state file it cannot use at start.
pub(crate) async fn watch(
    service: &Service,
    target: &Target,
    training: &Training,
    w: &Watch<'_>,
) -> Result<()> {
    let metrics = WatchMetrics::serve(service, w.metrics_addr).await?;
    let health = &service.health;
    let publisher = target.publisher(training, true).await?;
    let mut st = WatchState::load(w.state)?;
    let mut cfg = WatchConfig::load_or_create(w.config)?;
    println!(
        "watching {} (config {}, state {}: last count {}, last version {:?})",
        target.clickhouse.database,
        w.config.display(),
        w.state.display(),
        st.last_count,
        st.last_version
    );
    health.set_ready("watching");
    let stop = service.stop_on_signals("after this cycle");
    let mut done = 0u64;
    loop {
        match WatchConfig::load_or_create(w.config) {
            Ok(c) => cfg = c,
            Err(e) => tracing::warn!(error = %e, "config not re-read; keeping the last good one"),
        }
        match watch_cycle(target, training, &publisher, &cfg, &mut st, w).await {
            Ok(trained) => {
                health.set_ready("watching");
                if trained {
                    done += 1;
                    metrics.trainings.inc();
                    metrics
                        .last_version
                        .set(st.last_version.unwrap_or(0).into());
                    if w.max_trainings.is_some_and(|m| done >= m) {
                        return Ok(());
                    }
                }
            }
            // The count is not advanced, so the next cycle tries again with what arrived.
            Err(e) => {
                metrics.failures.inc();
                health.set_unready(format!("last cycle failed: {e:#}"));
                tracing::warn!(
                    error = format!("{e:#}"),
                    "watch cycle failed; retrying next cycle"
                );
            }
        }
        tokio::select! {
            _ = stop.stopped() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs_f64(cfg.poll_seconds.max(0.1))) => {}
        }
    }
}

/// One look at ClickHouse: retrains and publishes when `min_rows` new labelled rows arrived.
/// True when it trained.
async fn watch_cycle(
    target: &Target,
    training: &Training,
    publisher: &Publisher,
    cfg: &WatchConfig,
    st: &mut WatchState,
    w: &Watch<'_>,
) -> Result<bool> {
    let maturity = w.maturity;
    let count = count_labelled(&target.clickhouse)
        .await
        .context("counting labelled rows")?;
    if !st.due(count, cfg) {
        return Ok(false);
    }
    println!(
        "{} new labelled rows (min_rows {}): retraining on the newest {}",
        count - st.last_count,
        cfg.min_rows,
        cfg.limit
    );
    let selection = Selection {
        limit: cfg.limit,
        maturity,
        ..Selection::default()
    };
    let ex = examples_from_clickhouse(&target.clickhouse, &selection)
        .await
        .context("reading the labelled rows")?;
    report_immature(&target.clickhouse, maturity).await?;
    let source = format!(
        "ClickHouse {}.labelled_transactions, newest {} rows",
        target.clickhouse.database,
        ex.len()
    );
    let (_, outcome) = train_and_publish(&ex, &source, training, Some(publisher)).await?;
    st.last_version = outcome
        .and_then(|o| o.record.map(|r| r.version))
        .or(st.last_version);
    st.last_count = count;
    st.trainings += 1;
    st.save(w.state)?;
    Ok(true)
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
    let done = format!("trained in {:.1}s", started.elapsed().as_secs_f64());
    let outcome = announce_and_publish(&trained, ex, source, &done, training, publisher).await?;
    Ok((trained, outcome))
}

/// Prints a model's holdout evaluation next to the baseline, gates and publishes it (unless
/// --no-publish), and writes its report. `done` says where the model came from.
async fn announce_and_publish(
    trained: &trainer::Trained,
    ex: &Examples,
    source: &str,
    done: &str,
    training: &Training,
    publisher: Option<&Publisher>,
) -> Result<Option<Outcome>> {
    let m = &trained.metrics;
    // Why all rounds ran, when they did (see `trainer::MIN_FRAUDS_TO_JUDGE`).
    let stopped_on = match m.get("valid_frauds") {
        Some(&f) if (f as usize) < trainer::MIN_FRAUDS_TO_JUDGE => format!(
            "; no early stopping: {f} frauds in the validation split, fewer than {}",
            trainer::MIN_FRAUDS_TO_JUDGE
        ),
        _ => String::new(),
    };
    println!(
        "{done} ({} rounds{stopped_on}): holdout PR-AUC {:.4}, ROC-AUC {:.4}; threshold {}: precision {:.3}, recall {:.3}, {:.1} alerts per 10k",
        m["rounds"],
        m["pr_auc"],
        m["roc_auc"],
        show_threshold(trained.threshold),
        m["precision"],
        m["recall"],
        m["alerts_per_10k"]
    );
    if let Some(b) = &trained.baseline {
        println!(
            "baseline (the best one-feature rule: {} {}): holdout PR-AUC {:.4}; the model {}",
            if b.larger_is_fraud {
                "larger"
            } else {
                "smaller"
            },
            b.feature,
            b.pr_auc,
            if m["pr_auc"] > b.pr_auc {
                "beats it"
            } else {
                "does NOT beat it"
            }
        );
    }
    let outcome = match publisher {
        Some(p) if !training.no_publish => Some(p.gate_and_publish(trained, ex).await?),
        _ => None,
    };
    if let Some(o) = &outcome {
        let d = &o.decision;
        let mut against = d
            .champion_pr_auc
            .map_or("no champion yet".to_string(), |c| {
                format!("champion PR-AUC {c:.4} on the same holdout")
            });
        if d.too_few_frauds() {
            against += &format!(
                ", but only {} frauds in it: too few to judge (fewer than {}), the champion stays",
                d.holdout_frauds,
                trainer::MIN_FRAUDS_TO_JUDGE
            );
        }
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
    let (json, html) = report::write(trained, &ctx, &training.report)?;
    println!("report: {html} (and {json})");
    Ok(outcome)
}

/// `trainer features`: the feature matrix of a CSV, to train a model elsewhere.
pub(crate) fn features(csv: &Path, out: &Path) -> Result<()> {
    let (ex, bad) = examples_from_csv(csv)?;
    trainer::external::write_features(&ex, out)?;
    println!(
        "wrote {} rows x {} features, then is_fraud, to {} ({bad} bad rows skipped)",
        ex.len(),
        fraudstream_common::features::N_FEATURES,
        out.display()
    );
    Ok(())
}

/// `trainer import`: a model text from elsewhere, evaluated on the holdout of a CSV, gated and
/// published like one trained here.
pub(crate) async fn import(
    target: &Target,
    training: &Training,
    model: &Path,
    csv: &Path,
) -> Result<()> {
    let text = std::fs::read_to_string(model)
        .with_context(|| format!("reading the model text {}", model.display()))?;
    let (ex, _) = examples_from_csv(csv)?;
    let trained = trainer::external::evaluate_text(text, &ex, training.params().threshold_rule)
        .with_context(|| format!("{} cannot be imported", model.display()))?;
    let archive = !training.no_publish && target.clickhouse.migrate().await.is_ok();
    let publisher = if training.no_publish {
        None
    } else {
        Some(target.publisher(training, archive).await?)
    };
    let source = format!(
        "{} on {} ({} rows)",
        model.display(),
        csv.display(),
        ex.len()
    );
    let done = format!("imported {}", model.display());
    announce_and_publish(&trained, &ex, &source, &done, training, publisher.as_ref()).await?;
    Ok(())
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
