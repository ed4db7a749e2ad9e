//! Analyst rules on the compacted `rules` topic: the current book read back from the topic, a
//! change published (checked with the scorer's own compiler first), and a backtest of a rule over
//! the transactions ClickHouse holds (`trainer rules test`).

use crate::TrainerError;
use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::features::{push_features, AccountHistory, TxView, N_FEATURES};
use fraudstream_common::kafka::{read_partition_range, watermarks, KafkaArgs};
use fraudstream_common::rules::{decide, CompiledRule, Input};
use fraudstream_schemas::{Rule, RuleAction, TransactionType};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use std::collections::BTreeMap;
use std::time::Duration;

/// The rules on `topic` now, by id (a tombstone removed its rule), and the topic's end offset.
pub async fn read_book(
    kafka: &KafkaArgs,
    topic: &str,
) -> Result<(BTreeMap<String, Rule>, i64), TrainerError> {
    let reader = kafka.range_reader("trainer-rules-reader")?;
    let (low, high) = watermarks(&reader, topic, 0)?;
    let mut records = Vec::new();
    read_partition_range(&reader, topic, 0, low, high, Duration::from_secs(60), |m| {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        records.push((key, m.offset(), m.payload().map(<[u8]>::to_vec)));
    })?;
    let codec = kafka.codec()?;
    let mut book = BTreeMap::new();
    for (key, offset, payload) in records {
        match payload {
            None => {
                book.remove(&key);
            }
            Some(p) => match codec.decode::<Rule>(&p).await {
                Ok(rule) => {
                    book.insert(key, rule);
                }
                Err(e) => {
                    tracing::warn!(topic, offset, error = %e, "a record on the rules topic is not a rule; skipped")
                }
            },
        }
    }
    Ok((book, high))
}

/// Publishes `rule` keyed by its id once the scorer's compiler accepts it.
pub async fn publish(kafka: &KafkaArgs, topic: &str, rule: &Rule) -> Result<(), TrainerError> {
    CompiledRule::new(rule.clone()).map_err(|e| TrainerError::Data(e.to_string()))?;
    let payload = kafka.codec()?.encode(topic, rule).await?;
    send(kafka, topic, &rule.id, Some(&payload)).await
}

/// Deletes rule `id` (a tombstone: compaction drops its history).
pub async fn delete(kafka: &KafkaArgs, topic: &str, id: &str) -> Result<(), TrainerError> {
    send(kafka, topic, id, None).await
}

async fn send(
    kafka: &KafkaArgs,
    topic: &str,
    key: &str,
    payload: Option<&[u8]>,
) -> Result<(), TrainerError> {
    let producer: FutureProducer = kafka
        .client_config_with(&[("enable.idempotence", "true")])?
        .create()?;
    let mut record = FutureRecord::<str, [u8]>::to(topic).key(key);
    if let Some(p) = payload {
        record = record.payload(p);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| TrainerError::Kafka(e))?;
    Ok(())
}

/// What a rule would have hit in a period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backtest {
    pub transactions: u64,
    pub hits: u64,
    /// Hits whose label says fraud; `labelled_hits` of the hits had a label at all.
    pub fraud_hits: u64,
    pub labelled_hits: u64,
    /// Frauds in the period (labelled), hit or not.
    pub frauds: u64,
    /// Hits the model alerted on; and the alerts the rule would change (new alerts for ALERT,
    /// alerts removed for SUPPRESS).
    pub model_alert_hits: u64,
    pub changed_alerts: u64,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Row {
    step: i32,
    #[serde(rename = "type")]
    tx_type: String,
    amount: f64,
    name_orig: String,
    oldbalance_org: f64,
    newbalance_orig: f64,
    name_dest: String,
    oldbalance_dest: f64,
    newbalance_dest: f64,
    is_flagged_fraud: u8,
    is_fraud: u8,
    has_label: u8,
    score: f64,
    is_alert: u8,
}

/// Evaluates `rule` on every transaction of the last `hours` before the newest one in ClickHouse,
/// in event order, with the per-account window built from the transactions of that period (an
/// account's history from before it is not seen), and the score the model gave each one live.
pub async fn backtest(
    ch: &ClickHouseArgs,
    rule: &CompiledRule,
    hours: f64,
) -> Result<Backtest, TrainerError> {
    // Nested: ClickHouse 18.16 joins one table per SELECT.
    let sql = format!(
        "SELECT step, type, amount, name_orig, oldbalance_org, newbalance_orig, name_dest, \
           oldbalance_dest, newbalance_dest, is_flagged_fraud, is_fraud, has_label, score, is_alert \
         FROM ( \
           SELECT * FROM (SELECT * FROM transactions FINAL \
                          WHERE event_time >= (SELECT max(event_time) FROM transactions) - {secs}) \
           ANY LEFT JOIN (SELECT transaction_id, is_fraud, 1 AS has_label FROM labels FINAL) AS l \
             USING transaction_id \
         ) ANY LEFT JOIN (SELECT transaction_id, score, is_alert FROM predictions FINAL) AS p \
           USING transaction_id \
         ORDER BY event_time, event_ms, kafka_partition, kafka_offset",
        secs = (hours * 3600.0).round() as i64
    );
    let mut cursor = ch.client().query(&sql).fetch::<Row>()?;
    let mut history = AccountHistory::default();
    let mut features = Vec::with_capacity(N_FEATURES);
    let mut out = Backtest::default();
    while let Some(r) = cursor.next().await? {
        let tx_type: TransactionType = r.tx_type.parse().map_err(TrainerError::Data)?;
        let account = history.observe(&r.name_orig, out.transactions as i64, r.step, r.amount);
        features.clear();
        let view = TxView {
            step: r.step,
            tx_type,
            amount: r.amount,
            name_orig: &r.name_orig,
            oldbalance_org: r.oldbalance_org,
            newbalance_orig: r.newbalance_orig,
            name_dest: &r.name_dest,
            oldbalance_dest: r.oldbalance_dest,
            newbalance_dest: r.newbalance_dest,
        };
        push_features(&view, account, &mut features);
        out.transactions += 1;
        let fraud = r.has_label == 1 && r.is_fraud == 1;
        out.frauds += fraud as u64;
        let input = Input {
            features: &features,
            score: r.score,
            tx_type,
            name_orig: &r.name_orig,
            name_dest: &r.name_dest,
            is_flagged_fraud: r.is_flagged_fraud == 1,
        };
        if !rule.matches(&input) {
            continue;
        }
        out.hits += 1;
        out.fraud_hits += fraud as u64;
        out.labelled_hits += r.has_label as u64;
        out.model_alert_hits += r.is_alert as u64;
        let hit = [fraudstream_schemas::RuleHit {
            id: rule.rule.id.clone(),
            version: rule.rule.version,
            action: rule.rule.action,
        }];
        let model_alert = r.is_alert == 1;
        out.changed_alerts += (decide(model_alert, &hit) != model_alert) as u64;
    }
    Ok(out)
}

/// A rule as one line of `trainer rules list`.
pub fn summary_line(r: &Rule) -> String {
    format!(
        "{:<24} v{:<3} {:<8} {:<8} {:<12} {}",
        r.id,
        r.version,
        r.action.as_str(),
        if r.enabled { "enabled" } else { "disabled" },
        r.owner,
        r.expression
    )
}

/// The action a user typed.
pub fn action(s: &str) -> Result<RuleAction, String> {
    s.parse()
}
