//! Model versions: the compacted `models` topic (what the scorers serve: the newest record per
//! `<name>:<status>` key) and the ClickHouse `models` archive (every version ever published, with
//! its text and metrics, as an event log), so that any version can be promoted or rolled back to
//! after compaction dropped it from the topic.

use crate::{Trained, TrainerError, MIN_FRAUDS_TO_JUDGE};
use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::kafka::{read_partition_range, watermarks, KafkaArgs};
use fraudstream_common::model::pack_model_text;
use fraudstream_common::now_millis;
use fraudstream_schemas::{Compression, ModelRecord, ModelStatus};
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

pub fn status_name(s: ModelStatus) -> &'static str {
    match s {
        ModelStatus::Champion => "champion",
        ModelStatus::Challenger => "challenger",
        ModelStatus::Retired => "retired",
    }
}

/// Every record on the models topic, oldest first (the topic is compacted: one per key).
pub async fn read_models(kafka: &KafkaArgs, topic: &str) -> Result<Vec<ModelRecord>, TrainerError> {
    let codec = kafka.codec()?;
    let consumer = kafka.range_reader("trainer-models-reader")?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut payloads = Vec::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = watermarks(&consumer, topic, p.id())?;
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

/// The record the scorers serve as `status` for `name` now: the newest one with that status.
pub fn serving(records: &[ModelRecord], name: &str, status: ModelStatus) -> Option<ModelRecord> {
    records
        .iter()
        .rev()
        .find(|r| r.model_name == name && r.status == status)
        .cloned()
}

/// Sends `record` to the models topic under its `<name>:<status>` key.
pub async fn send_record(
    kafka: &KafkaArgs,
    topic: &str,
    record: &ModelRecord,
) -> Result<(), TrainerError> {
    let codec = kafka.codec()?;
    let payload = codec.encode(topic, record).await?;
    let key = format!("{}:{}", record.model_name, status_name(record.status));
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
    Ok(())
}

/// One above the highest version of `name` on the topic (`records`) and in the archive.
pub fn next_version(records: &[ModelRecord], archived: &[ArchiveRow], name: &str) -> i32 {
    let on_topic = records
        .iter()
        .filter(|r| r.model_name == name)
        .map(|r| r.version);
    let in_archive = archived
        .iter()
        .filter(|r| r.model_name == name)
        .map(|r| r.version);
    on_topic.chain(in_archive).max().unwrap_or(0) + 1
}

/// Publishes `trained` as the next version of `model_name` on the topic, with `status`.
/// Returns the record.
pub async fn publish_model(
    kafka: &KafkaArgs,
    topic: &str,
    model_name: &str,
    trained: &Trained,
    status: ModelStatus,
    window: (i64, i64),
) -> Result<ModelRecord, TrainerError> {
    let version = next_version(&read_models(kafka, topic).await?, &[], model_name);
    let record = new_record(model_name, version, trained, status, window);
    send_record(kafka, topic, &record).await?;
    Ok(record)
}

/// A record for `trained` as `version`.
pub fn new_record(
    model_name: &str,
    version: i32,
    trained: &Trained,
    status: ModelStatus,
    window: (i64, i64),
) -> ModelRecord {
    let (compression, model_text) = pack_model_text(&trained.model_text);
    ModelRecord {
        model_name: model_name.into(),
        version,
        created_at: now_millis(),
        format: "lightgbm-text".into(),
        // A model trained elsewhere keeps the names (and order) its text declares.
        feature_names: fraudstream_common::model_text::declared_names(&trained.model_text)
            .unwrap_or_else(fraudstream_common::features::feature_names),
        threshold: trained.threshold,
        metrics: trained.metrics.clone(),
        training_window_start: window.0,
        training_window_end: window.1,
        compression,
        model_text,
        status,
    }
}

/// One row of the ClickHouse `models` archive (`deploy/clickhouse/001_tables.sql`).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct ArchiveRow {
    pub model_name: String,
    pub version: i32,
    pub status: String,
    /// published, promoted, rolled-back
    pub event: String,
    pub created_at: u32,
    pub archived_at: u32,
    pub archived_millis: i64,
    pub threshold: f64,
    pub pr_auc: f64,
    pub roc_auc: f64,
    pub train_rows: u64,
    pub training_window_start: i64,
    pub training_window_end: i64,
    pub metrics_json: String,
    pub feature_names: Vec<String>,
    pub model_text: String,
}

impl ArchiveRow {
    pub fn new(r: &ModelRecord, event: &str) -> Result<Self, TrainerError> {
        let now = now_millis();
        let m = |k: &str| r.metrics.get(k).copied().unwrap_or(f64::NAN);
        Ok(ArchiveRow {
            model_name: r.model_name.clone(),
            version: r.version,
            status: status_name(r.status).into(),
            event: event.into(),
            created_at: (r.created_at / 1000).max(0) as u32,
            archived_at: (now / 1000) as u32,
            archived_millis: now,
            threshold: r.threshold,
            pr_auc: m("pr_auc"),
            roc_auc: m("roc_auc"),
            train_rows: m("train_rows").max(0.0) as u64,
            training_window_start: r.training_window_start,
            training_window_end: r.training_window_end,
            metrics_json: serde_json::to_string(&r.metrics).unwrap_or_default(),
            feature_names: r.feature_names.clone(),
            model_text: unpack_text(r)?,
        })
    }

    /// The archived version as a record with `status` (to publish it again).
    pub fn to_record(&self, status: ModelStatus) -> ModelRecord {
        let (compression, model_text) = pack_model_text(&self.model_text);
        ModelRecord {
            model_name: self.model_name.clone(),
            version: self.version,
            created_at: self.created_at as i64 * 1000,
            format: "lightgbm-text".into(),
            feature_names: self.feature_names.clone(),
            threshold: self.threshold,
            metrics: serde_json::from_str::<HashMap<String, f64>>(&self.metrics_json)
                .unwrap_or_default(),
            training_window_start: self.training_window_start,
            training_window_end: self.training_window_end,
            compression,
            model_text,
            status,
        }
    }
}

fn unpack_text(r: &ModelRecord) -> Result<String, TrainerError> {
    let bytes = match r.compression {
        Compression::None => r.model_text.clone(),
        Compression::Zstd => {
            zstd::decode_all(&r.model_text[..]).map_err(|e| TrainerError::ModelText {
                what: format!("model v{} text does not decompress", r.version),
                source: Box::new(e),
            })?
        }
    };
    String::from_utf8(bytes).map_err(|e| TrainerError::ModelText {
        what: format!("model v{} text is not UTF-8", r.version),
        source: Box::new(e),
    })
}

/// Appends `record` to the archive as `event`.
pub async fn archive(
    ch: &ClickHouseArgs,
    record: &ModelRecord,
    event: &str,
) -> Result<(), TrainerError> {
    let row = ArchiveRow::new(record, event)?;
    let mut insert = ch.client().insert::<ArchiveRow>("models").await?;
    insert.write(&row).await?;
    insert.end().await?;
    Ok(())
}

/// The archive's event log for `name`, oldest first; empty before anything was archived.
pub async fn history(ch: &ClickHouseArgs, name: &str) -> Result<Vec<ArchiveRow>, TrainerError> {
    // Before the sink or a publishing command has created the database and its tables, `list`
    // and the others say there is no archived version, not ClickHouse's "doesn't exist".
    let tables: u64 = ch
        .server_client()
        .query("SELECT count() FROM system.tables WHERE database = ? AND name = 'models'")
        .bind(&ch.database)
        .fetch_one()
        .await?;
    if tables == 0 {
        return Ok(Vec::new());
    }
    Ok(ch
        .client()
        .query("SELECT ?fields FROM models WHERE model_name = ? ORDER BY archived_millis, version")
        .bind(name)
        .fetch_all::<ArchiveRow>()
        .await?)
}

/// The newest archive row of each version of `name`, by version.
pub fn latest_per_version(history: &[ArchiveRow]) -> Vec<ArchiveRow> {
    let mut by_version: std::collections::BTreeMap<i32, ArchiveRow> = Default::default();
    for row in history {
        by_version.insert(row.version, row.clone());
    }
    by_version.into_values().collect()
}

/// The champion before the current one: walking the champion events back from the newest, the
/// first version that differs from the current champion. None when there was only one.
pub fn previous_champion(history: &[ArchiveRow]) -> Option<&ArchiveRow> {
    let mut champions = history.iter().rev().filter(|r| r.status == "champion");
    let current = champions.next()?;
    champions.find(|r| r.version != current.version)
}

/// Outcome of the champion/challenger gate.
#[derive(Debug, Clone, PartialEq)]
pub struct GateDecision {
    /// PR-AUC of the new model on its holdout.
    pub candidate_pr_auc: f64,
    /// PR-AUC of the serving champion on the same holdout (None: there is no champion).
    pub champion_pr_auc: Option<f64>,
    /// Frauds in the holdout: the PR-AUCs' sample.
    pub holdout_frauds: usize,
    pub promote: bool,
}

impl GateDecision {
    /// There is a champion, and the holdout has too few frauds to tell the two apart.
    pub fn too_few_frauds(&self) -> bool {
        self.champion_pr_auc.is_some() && self.holdout_frauds < MIN_FRAUDS_TO_JUDGE
    }
}

/// The new model becomes champion when its holdout PR-AUC is at least the champion's on the same
/// rows, minus `tolerance`, and the holdout holds at least [`MIN_FRAUDS_TO_JUDGE`] frauds: on
/// fewer, the difference is noise (two of the demo's first retrains, on 0 and 3 frauds to validate
/// on, replaced a champion that caught 27% of a new pattern with models that caught 0.2%). With
/// no loadable champion, it becomes champion.
pub fn gate(
    candidate_pr_auc: f64,
    champion_pr_auc: Option<f64>,
    tolerance: f64,
    holdout_frauds: usize,
) -> GateDecision {
    let judged = holdout_frauds >= MIN_FRAUDS_TO_JUDGE;
    GateDecision {
        candidate_pr_auc,
        champion_pr_auc,
        holdout_frauds,
        promote: champion_pr_auc.is_none_or(|c| judged && candidate_pr_auc >= c - tolerance),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: i32, status: &str, at: i64) -> ArchiveRow {
        ArchiveRow {
            model_name: "m".into(),
            version,
            status: status.into(),
            event: "published".into(),
            created_at: 0,
            archived_at: 0,
            archived_millis: at,
            threshold: 0.5,
            pr_auc: 0.9,
            roc_auc: 0.9,
            train_rows: 1,
            training_window_start: 0,
            training_window_end: 0,
            metrics_json: "{}".into(),
            feature_names: vec![],
            model_text: String::new(),
        }
    }

    #[test]
    fn previous_champion_skips_challengers_and_the_current_version() {
        let h = vec![
            row(1, "champion", 1),
            row(2, "challenger", 2),
            row(3, "champion", 3),
            row(3, "champion", 4), // promoted again
        ];
        assert_eq!(previous_champion(&h).map(|r| r.version), Some(1));
        assert_eq!(previous_champion(&h[..1]), None);
        assert_eq!(latest_per_version(&h).len(), 3);
    }

    #[test]
    fn gate_promotes_only_at_least_as_good() {
        assert!(gate(0.95, None, 0.0, 500).promote);
        assert!(gate(0.95, Some(0.95), 0.0, 500).promote);
        assert!(!gate(0.90, Some(0.95), 0.01, 500).promote);
        assert!(gate(0.945, Some(0.95), 0.01, 500).promote);
        // Too few frauds in the holdout to judge: the champion stays, whatever the PR-AUCs.
        let unjudged = gate(0.95, Some(0.10), 0.0, MIN_FRAUDS_TO_JUDGE - 1);
        assert!(!unjudged.promote && unjudged.too_few_frauds());
        assert!(gate(0.95, None, 0.0, 3).promote, "the first model serves");
    }
}
