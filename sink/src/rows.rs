//! The ClickHouse rows, one struct per table in `deploy/clickhouse/001_tables.sql`, in column
//! order (RowBinary is positional). Millisecond timestamps become DateTime seconds plus a UInt16
//! millisecond column, which both ClickHouse 18.16 and current versions store.

use crate::split_millis;
use fraudstream_schemas::{Label, Prediction, Transaction};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct TransactionRow {
    pub transaction_id: String,
    pub event_time: u32,
    pub event_ms: u16,
    pub step: i32,
    #[serde(rename = "type")]
    pub tx_type: String,
    pub amount: f64,
    pub name_orig: String,
    pub oldbalance_org: f64,
    pub newbalance_orig: f64,
    pub name_dest: String,
    pub oldbalance_dest: f64,
    pub newbalance_dest: f64,
    pub is_flagged_fraud: u8,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

impl TransactionRow {
    pub fn new(t: Transaction, partition: i32, offset: i64) -> Self {
        let (event_time, event_ms) = split_millis(t.event_time);
        TransactionRow {
            transaction_id: t.transaction_id,
            event_time,
            event_ms,
            step: t.step,
            tx_type: t.tx_type.as_str().to_string(),
            amount: t.amount,
            name_orig: t.name_orig,
            oldbalance_org: t.oldbalance_org,
            newbalance_orig: t.newbalance_orig,
            name_dest: t.name_dest,
            oldbalance_dest: t.oldbalance_dest,
            newbalance_dest: t.newbalance_dest,
            is_flagged_fraud: t.is_flagged_fraud as u8,
            kafka_partition: partition,
            kafka_offset: offset,
        }
    }
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct PredictionRow {
    pub transaction_id: String,
    pub name_orig: String,
    #[serde(rename = "type")]
    pub tx_type: String,
    pub amount: f64,
    pub event_time: u32,
    pub event_ms: u16,
    pub scored_at: u32,
    pub scored_ms: u16,
    pub latency_ms: u32,
    pub score: f64,
    pub is_alert: u8,
    pub threshold: f64,
    pub model_name: String,
    pub model_version: i32,
    pub challenger_score: Option<f64>,
    pub challenger_version: Option<i32>,
    pub reason_features: Vec<String>,
    pub reason_contributions: Vec<f64>,
    pub rule_ids: Vec<String>,
    pub rule_versions: Vec<i32>,
    pub rule_actions: Vec<String>,
    pub rules_version: i64,
}

impl From<Prediction> for PredictionRow {
    fn from(p: Prediction) -> Self {
        let (event_time, event_ms) = split_millis(p.event_time);
        let (scored_at, scored_ms) = split_millis(p.scored_at);
        let (reason_features, reason_contributions) = p
            .top_reasons
            .into_iter()
            .map(|r| (r.feature, r.contribution))
            .unzip();
        let mut rule_ids = Vec::with_capacity(p.rule_hits.len());
        let mut rule_versions = Vec::with_capacity(p.rule_hits.len());
        let mut rule_actions = Vec::with_capacity(p.rule_hits.len());
        for hit in p.rule_hits {
            rule_ids.push(hit.id);
            rule_versions.push(hit.version);
            rule_actions.push(hit.action.as_str().to_string());
        }
        PredictionRow {
            transaction_id: p.transaction_id,
            name_orig: p.name_orig,
            tx_type: p.tx_type.as_str().to_string(),
            amount: p.amount,
            event_time,
            event_ms,
            scored_at,
            scored_ms,
            latency_ms: (p.scored_at - p.event_time).clamp(0, u32::MAX as i64) as u32,
            score: p.score,
            is_alert: p.is_alert as u8,
            threshold: p.threshold,
            model_name: p.model_name,
            model_version: p.model_version,
            challenger_score: p.challenger_score,
            challenger_version: p.challenger_version,
            reason_features,
            reason_contributions,
            rule_ids,
            rule_versions,
            rule_actions,
            rules_version: p.rules_version,
        }
    }
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct LabelRow {
    pub transaction_id: String,
    pub is_fraud: u8,
    pub labelled_at: u32,
    pub labelled_ms: u16,
    pub source: String,
    pub analyst: String,
    pub note: String,
}

impl From<Label> for LabelRow {
    fn from(l: Label) -> Self {
        let (labelled_at, labelled_ms) = split_millis(l.labelled_at);
        LabelRow {
            transaction_id: l.transaction_id,
            is_fraud: l.is_fraud as u8,
            labelled_at,
            labelled_ms,
            source: l.source.as_str().to_string(),
            analyst: l.analyst,
            note: l.note,
        }
    }
}

/// One RowBinary insert of `rows` into `table` (nothing when empty): the sink's writer and the
/// bench's raw-insert baseline share it, so the two differ only in what surrounds the insert.
pub async fn insert<R>(
    client: &clickhouse::Client,
    table: &str,
    rows: &[R],
) -> Result<(), clickhouse::error::Error>
where
    R: clickhouse::RowOwned + clickhouse::RowWrite,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<R>(table).await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}
