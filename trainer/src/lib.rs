//! The trainer: turns labelled PaySim rows into a LightGBM model and publishes it to the compacted
//! `models` topic, where every scorer picks it up. Features come from the shared feature code (the
//! scorer's own), fed in time order, so training and serving cannot disagree.
//!
//! Today: `bootstrap` from the historical CSV (time-based train/validation/holdout split, early
//! stopping, PR-AUC and ROC-AUC on the holdout, threshold by target precision). Retraining from
//! ClickHouse, the champion/challenger gate and `watch` come with the sink's tables.

use fraudstream_common::features::{push_features, AccountHistory, N_FEATURES};
use fraudstream_common::kafka::{read_partition_range, KafkaArgs};
use fraudstream_common::model::pack_model_text;
use fraudstream_schemas::{Codec, ModelRecord, ModelStatus};
use producer::paysim::{CsvError, CsvReader};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use std::collections::HashMap;
use std::time::Duration;

/// Errors of training and publishing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainerError {
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error("LightGBM: {0}")]
    LightGbm(#[from] lightgbm3::Error),
    #[error("not enough data: {0}")]
    Data(String),
    #[error(transparent)]
    Schema(#[from] fraudstream_schemas::SchemaError),
    #[error(transparent)]
    Common(#[from] fraudstream_common::CommonError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// A feature matrix in time order.
#[derive(Debug, Default)]
pub struct Examples {
    pub rows: Vec<f64>,
    pub labels: Vec<f32>,
    pub first_step: i32,
    pub last_step: i32,
}

impl Examples {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Rows `from..to` as a new matrix.
    fn slice(&self, from: usize, to: usize) -> (&[f64], &[f32]) {
        (
            &self.rows[from * N_FEATURES..to * N_FEATURES],
            &self.labels[from..to],
        )
    }
}

/// Reads a PaySim CSV (time-ordered, as PaySim and `producer split` write it) into features,
/// with per-account history exactly as the scorer keeps it. Bad rows are skipped and counted.
pub fn examples_from_csv(path: &std::path::Path) -> Result<(Examples, u64), TrainerError> {
    let mut reader = CsvReader::open(path)?;
    let mut ex = Examples::default();
    let mut history = AccountHistory::default();
    let (mut position, mut bad) = (0i64, 0u64);
    while let Some((_, row)) = reader.next_row()? {
        let Ok(row) = row else {
            bad += 1;
            continue;
        };
        if ex.is_empty() {
            ex.first_step = row.step;
        }
        ex.last_step = row.step;
        let account = history.observe(&row.name_orig, position, row.step, row.amount);
        push_features(&row.view(), account, &mut ex.rows);
        ex.labels.push(row.is_fraud as u8 as f32);
        position += 1;
        if position % 1_000_000 == 0 {
            history.evict_expired(row.step);
        }
    }
    Ok((ex, bad))
}

/// LightGBM settings. Class weighting stays moderate: extreme scale_pos_weight is known to wreck
/// LightGBM on PaySim's 0.13% positives.
#[derive(Debug, Clone)]
pub struct TrainParams {
    pub max_rounds: i64,
    pub learning_rate: f64,
    pub num_leaves: i64,
    pub scale_pos_weight: f64,
    pub early_stopping_rounds: i64,
    pub threads: i64,
    /// Alert threshold: the lowest score whose holdout precision reaches this.
    pub target_precision: f64,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            max_rounds: 300,
            learning_rate: 0.1,
            num_leaves: 31,
            scale_pos_weight: 5.0,
            early_stopping_rounds: 20,
            threads: 2,
            target_precision: 0.9,
        }
    }
}

/// A trained model with its holdout evaluation.
#[derive(Debug, Clone)]
pub struct Trained {
    pub model_text: String,
    pub threshold: f64,
    pub metrics: HashMap<String, f64>,
}

/// Trains on the first 80% (in time), stops early on the next 10%, evaluates on the last 10%.
pub fn train(ex: &Examples, p: &TrainParams) -> Result<Trained, TrainerError> {
    let n = ex.len();
    let (train_end, valid_end) = (n * 8 / 10, n * 9 / 10);
    let positives = |l: &[f32]| l.iter().filter(|x| **x > 0.5).count();
    if n < 1000
        || positives(&ex.labels[..train_end]) == 0
        || positives(&ex.labels[valid_end..]) == 0
    {
        return Err(TrainerError::Data(format!(
            "{n} rows with {} frauds: need at least 1000 rows and fraud in both the training and the holdout part",
            positives(&ex.labels)
        )));
    }
    let (tx, ty) = ex.slice(0, train_end);
    let (vx, vy) = ex.slice(train_end, valid_end);
    let train_set = lightgbm3::Dataset::from_slice(tx, ty, N_FEATURES as i32, true)?;
    let valid_set = lightgbm3::Dataset::from_slice_with_reference(
        vx,
        vy,
        N_FEATURES as i32,
        true,
        Some(&train_set),
    )?;
    let params = serde_json::json!({
        "objective": "binary",
        // Log loss keeps improving after PR-AUC saturates (often at 1.0 on PaySim after a few
        // trees), so early stopping does not cut the model to a handful of trees.
        "metric": "binary_logloss",
        "num_iterations": p.max_rounds,
        "learning_rate": p.learning_rate,
        "num_leaves": p.num_leaves,
        "scale_pos_weight": p.scale_pos_weight,
        "early_stopping_rounds": p.early_stopping_rounds,
        "num_threads": p.threads,
        "verbose": -1,
    });
    let booster = lightgbm3::Booster::train_with_valid(train_set, Some(valid_set), &params)?;
    let (hx, hy) = ex.slice(valid_end, n);
    let scores = booster.predict_with_params(
        hx,
        N_FEATURES as i32,
        true,
        &format!("num_threads={}", p.threads),
    )?;
    let labels: Vec<bool> = hy.iter().map(|y| *y > 0.5).collect();
    let threshold = threshold_for_precision(&scores, &labels, p.target_precision);
    let mut metrics = evaluate(&scores, &labels, threshold);
    metrics.insert("rounds".into(), booster.num_iterations() as f64);
    metrics.insert("train_rows".into(), train_end as f64);
    metrics.insert("holdout_rows".into(), (n - valid_end) as f64);
    Ok(Trained {
        model_text: booster.save_string()?,
        threshold,
        metrics,
    })
}

/// Area under the precision-recall curve (average precision) and ROC AUC.
pub fn pr_and_roc_auc(scores: &[f64], labels: &[bool]) -> (f64, f64) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    let (mut tp, mut fp, mut ap, mut auc) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        // Ties share one threshold.
        let (mut dtp, mut dfp) = (0.0, 0.0);
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if labels[order[i]] {
                dtp += 1.0
            } else {
                dfp += 1.0
            }
            i += 1;
        }
        auc += dfp * (tp + dtp / 2.0);
        tp += dtp;
        fp += dfp;
        if dtp > 0.0 {
            ap += (dtp / positives.max(1.0)) * (tp / (tp + fp));
        }
    }
    (ap, auc / (positives * negatives).max(1.0))
}

/// The threshold with the most recall among those whose precision on (scores, labels) is at least
/// `target`; of equal recall, the highest (fewest alerts). 0.5 when no threshold reaches `target`.
pub fn threshold_for_precision(scores: &[f64], labels: &[bool], target: f64) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (mut tp, mut seen) = (0.0, 0.0);
    let mut best: Option<(f64, f64)> = None; // (true positives, threshold)
    for (k, i) in order.iter().enumerate() {
        tp += labels[*i] as u8 as f64;
        seen += 1.0;
        let next_differs = order.get(k + 1).is_none_or(|j| scores[*j] != scores[*i]);
        if next_differs && tp / seen >= target && best.is_none_or(|(b, _)| tp > b) {
            best = Some((tp, scores[*i]));
        }
    }
    best.map_or(0.5, |(_, t)| t)
}

/// PR-AUC, ROC-AUC and the confusion matrix at `threshold`.
pub fn evaluate(scores: &[f64], labels: &[bool], threshold: f64) -> HashMap<String, f64> {
    let (pr_auc, roc_auc) = pr_and_roc_auc(scores, labels);
    let (mut tp, mut fp, mut tn, mut fn_) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (s, l) in scores.iter().zip(labels) {
        match (*s >= threshold, *l) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, false) => tn += 1.0,
            (false, true) => fn_ += 1.0,
        }
    }
    let precision = tp / (tp + fp).max(1.0);
    let recall = tp / (tp + fn_).max(1.0);
    HashMap::from([
        ("pr_auc".into(), pr_auc),
        ("roc_auc".into(), roc_auc),
        ("precision".into(), precision),
        ("recall".into(), recall),
        (
            "f1".into(),
            2.0 * precision * recall / (precision + recall).max(1e-12),
        ),
        ("tp".into(), tp),
        ("fp".into(), fp),
        ("tn".into(), tn),
        ("fn".into(), fn_),
        (
            "alerts_per_10k".into(),
            10_000.0 * (tp + fp) / scores.len().max(1) as f64,
        ),
    ])
}

/// Every record on the models topic, oldest first (the topic is compacted: one per key).
pub async fn read_models(kafka: &KafkaArgs, topic: &str) -> Result<Vec<ModelRecord>, TrainerError> {
    let codec = Codec::new(&kafka.schema_registry);
    let consumer: BaseConsumer = kafka
        .client_config_with(&[
            ("group.id", "trainer-models-reader"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
        ])?
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut payloads = Vec::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        read_partition_range(
            &consumer,
            topic,
            p.id(),
            low,
            high,
            Duration::from_secs(30),
            |m| {
                payloads.extend(m.payload().map(<[u8]>::to_vec));
            },
        )?;
    }
    let mut records = Vec::new();
    for payload in payloads {
        // A record that is not a ModelRecord (the scorer refuses it too) is skipped.
        if let Ok(r) = codec.decode::<ModelRecord>(&payload).await {
            records.push(r);
        }
    }
    Ok(records)
}

/// Publishes `trained` as the next version of `model_name`, with `status`. Returns the record.
pub async fn publish_model(
    kafka: &KafkaArgs,
    topic: &str,
    model_name: &str,
    trained: &Trained,
    status: ModelStatus,
    window: (i64, i64),
) -> Result<ModelRecord, TrainerError> {
    let version = read_models(kafka, topic)
        .await?
        .iter()
        .filter(|r| r.model_name == model_name)
        .map(|r| r.version)
        .max()
        .unwrap_or(0)
        + 1;
    let (compression, model_text) = pack_model_text(&trained.model_text);
    let record = ModelRecord {
        model_name: model_name.into(),
        version,
        created_at: fraudstream_common::now_millis(),
        format: "lightgbm-text".into(),
        feature_names: fraudstream_common::features::feature_names(),
        threshold: trained.threshold,
        metrics: trained.metrics.clone(),
        training_window_start: window.0,
        training_window_end: window.1,
        compression,
        model_text,
        status,
    };
    let codec = Codec::new(&kafka.schema_registry);
    let payload = codec.encode(topic, &record).await?;
    let key = format!(
        "{model_name}:{}",
        match status {
            ModelStatus::Champion => "champion",
            ModelStatus::Challenger => "challenger",
            ModelStatus::Retired => "retired",
        }
    );
    let producer: FutureProducer = kafka
        .client_config_with(&[("enable.idempotence", "true")])?
        .create()?;
    producer
        .send(
            FutureRecord::to(topic).key(&key).payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_a_perfect_and_a_useless_ranking() {
        let labels = [true, true, false, false, false];
        let (pr, roc) = pr_and_roc_auc(&[0.9, 0.8, 0.3, 0.2, 0.1], &labels);
        assert!((pr - 1.0).abs() < 1e-12 && (roc - 1.0).abs() < 1e-12);
        let (pr, roc) = pr_and_roc_auc(&[0.5; 5], &labels);
        assert!((roc - 0.5).abs() < 1e-12);
        assert!((pr - 0.4).abs() < 1e-12, "all tied: precision = base rate");
    }

    #[test]
    fn threshold_meets_the_target_precision() {
        let scores = [0.95, 0.9, 0.8, 0.7, 0.6, 0.1];
        let labels = [true, true, false, true, false, false];
        assert_eq!(threshold_for_precision(&scores, &labels, 1.0), 0.9);
        assert_eq!(threshold_for_precision(&scores, &labels, 0.75), 0.7);
        let m = evaluate(&scores, &labels, 0.7);
        assert_eq!((m["tp"], m["fp"], m["fn"]), (3.0, 1.0, 0.0));
    }
}
