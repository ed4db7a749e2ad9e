//! The alerts as ClickHouse holds them: a page of the open queue (alerts without an analyst's
//! verdict), one alert in detail, and the origin account's recent transactions. Every query is
//! paged or keyed: nothing is held in memory but the page shown.

use clickhouse::Client;
use serde::Deserialize;

/// How the queue is filtered, sorted and paged (the page's query string).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct QueueQuery {
    /// `score` (highest first) or newest first.
    #[serde(default)]
    pub sort: String,
    /// A transaction type, or empty for all.
    #[serde(default, rename = "type")]
    pub tx_type: String,
    /// Smallest amount shown.
    #[serde(default)]
    pub min_amount: Option<f64>,
    /// Only alerts this rule id matched.
    #[serde(default)]
    pub rule: String,
    #[serde(default)]
    pub page: u32,
}

pub const PAGE_SIZE: u32 = 50;

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct QueueRow {
    pub transaction_id: String,
    pub event_time: u32,
    pub name_orig: String,
    #[serde(rename = "type")]
    pub tx_type: String,
    pub amount: f64,
    pub score: f64,
    pub model_version: i32,
    pub rule_ids: Vec<String>,
}

/// One page of open alerts, and how many are open in all under the filter.
pub async fn queue(
    ch: &Client,
    q: &QueueQuery,
) -> Result<(Vec<QueueRow>, u64), clickhouse::error::Error> {
    let mut filter = String::from(
        "is_alert = 1 AND transaction_id NOT IN (SELECT transaction_id FROM labels WHERE source = 'ANALYST')",
    );
    if !q.tx_type.is_empty() {
        filter.push_str(" AND type = ?");
    }
    if q.min_amount.is_some() {
        filter.push_str(" AND amount >= ?");
    }
    if !q.rule.is_empty() {
        filter.push_str(" AND has(rule_ids, ?)");
    }
    let order = if q.sort == "score" {
        "score DESC, event_time DESC"
    } else {
        "event_time DESC, score DESC"
    };
    let bind = |mut query: clickhouse::query::Query| {
        if !q.tx_type.is_empty() {
            query = query.bind(q.tx_type.as_str());
        }
        if let Some(a) = q.min_amount {
            query = query.bind(a);
        }
        if !q.rule.is_empty() {
            query = query.bind(q.rule.as_str());
        }
        query
    };
    let rows = bind(ch.query(&format!(
        "SELECT transaction_id, toUInt32(event_time) AS event_time, name_orig, type, amount, score, \
         model_version, rule_ids FROM predictions FINAL WHERE {filter} ORDER BY {order}, transaction_id \
         LIMIT {PAGE_SIZE} OFFSET {}",
        q.page as u64 * PAGE_SIZE as u64
    )))
    .fetch_all::<QueueRow>()
    .await?;
    let total = bind(ch.query(&format!(
        "SELECT count() FROM predictions FINAL WHERE {filter}"
    )))
    .fetch_one::<u64>()
    .await?;
    Ok((rows, total))
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct AlertDetail {
    pub transaction_id: String,
    pub event_time: u32,
    pub name_orig: String,
    #[serde(rename = "type")]
    pub tx_type: String,
    pub amount: f64,
    pub score: f64,
    pub threshold: f64,
    pub is_alert: u8,
    pub model_name: String,
    pub model_version: i32,
    pub reason_features: Vec<String>,
    pub reason_contributions: Vec<f64>,
    pub rule_ids: Vec<String>,
    pub rule_versions: Vec<i32>,
    pub rule_actions: Vec<String>,
    pub rules_version: i64,
}

pub async fn detail(
    ch: &Client,
    id: &str,
) -> Result<Option<AlertDetail>, clickhouse::error::Error> {
    ch.query(
        "SELECT transaction_id, toUInt32(event_time) AS event_time, name_orig, type, amount, score, \
         threshold, is_alert, model_name, model_version, reason_features, reason_contributions, \
         rule_ids, rule_versions, rule_actions, rules_version FROM predictions FINAL \
         WHERE transaction_id = ? LIMIT 1",
    )
    .bind(id)
    .fetch_optional()
    .await
}

/// The transaction's own fields (the sink lands them next to the prediction).
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct TxRow {
    pub transaction_id: String,
    pub event_time: u32,
    pub step: i32,
    #[serde(rename = "type")]
    pub tx_type: String,
    pub amount: f64,
    pub oldbalance_org: f64,
    pub newbalance_orig: f64,
    pub name_dest: String,
    pub oldbalance_dest: f64,
    pub newbalance_dest: f64,
}

const TX_COLUMNS: &str = "transaction_id, toUInt32(event_time) AS event_time, step, type, amount, \
    oldbalance_org, newbalance_orig, name_dest, oldbalance_dest, newbalance_dest";

pub async fn transaction(ch: &Client, id: &str) -> Result<Option<TxRow>, clickhouse::error::Error> {
    ch.query(&format!(
        "SELECT {TX_COLUMNS} FROM transactions FINAL WHERE transaction_id = ? LIMIT 1"
    ))
    .bind(id)
    .fetch_optional()
    .await
}

/// The origin account's newest transactions (20).
pub async fn history(ch: &Client, name_orig: &str) -> Result<Vec<TxRow>, clickhouse::error::Error> {
    ch.query(&format!(
        "SELECT {TX_COLUMNS} FROM transactions FINAL WHERE name_orig = ? \
         ORDER BY event_time DESC, event_ms DESC LIMIT 20"
    ))
    .bind(name_orig)
    .fetch_all()
    .await
}

/// A label already given to the transaction: (is_fraud, source, analyst, note).
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct LabelRow {
    pub is_fraud: u8,
    pub source: String,
    pub analyst: String,
    pub note: String,
}

pub async fn labels(ch: &Client, id: &str) -> Result<Vec<LabelRow>, clickhouse::error::Error> {
    ch.query(
        "SELECT is_fraud, source, analyst, note FROM labels WHERE transaction_id = ? \
         ORDER BY labelled_at, labelled_ms",
    )
    .bind(id)
    .fetch_all()
    .await
}
