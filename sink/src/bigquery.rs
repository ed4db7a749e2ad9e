//! Optional second destination: BigQuery's streaming insert (`tabledata.insertAll`), built with
//! `--features bigquery` and turned on with `--bigquery`.
//!
//! Every row carries `insertId` = transaction id, so BigQuery's best-effort dedup drops the copies
//! a re-read batch sends again (the same guarantee ClickHouse gets from ReplacingMergeTree).
//! Credentials: an OAuth access token from `GOOGLE_OAUTH_ACCESS_TOKEN` (e.g.
//! `gcloud auth print-access-token`); the endpoint can point at an emulator.

use crate::rows::PredictionRow;
use crate::SinkError;
use serde_json::json;

/// Where predictions go in BigQuery.
#[derive(Debug, Clone)]
pub struct BigQueryConfig {
    /// API root, `https://bigquery.googleapis.com` or an emulator's address.
    pub endpoint: String,
    pub project: String,
    pub dataset: String,
    pub table: String,
    /// Bearer token; none for an emulator.
    pub access_token: Option<String>,
}

pub struct BigQuery {
    cfg: BigQueryConfig,
    http: reqwest::Client,
}

/// insertAll accepts at most 50,000 rows and 10 MB per request; a prediction is ~400 bytes of
/// JSON, so 5,000 rows stay well below the size limit.
const ROWS_PER_REQUEST: usize = 5_000;

impl BigQuery {
    pub fn new(cfg: BigQueryConfig) -> Self {
        BigQuery {
            cfg,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        format!(
            "{}/bigquery/v2/projects/{}/datasets/{}/tables/{}/insertAll",
            self.cfg.endpoint.trim_end_matches('/'),
            self.cfg.project,
            self.cfg.dataset,
            self.cfg.table
        )
    }

    /// The request body for `rows`: one entry per prediction, insertId = transaction id.
    pub fn body(rows: &[PredictionRow]) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| json!({ "insertId": r.transaction_id, "json": r }))
            .collect();
        json!({ "kind": "bigquery#tableDataInsertAllRequest", "skipInvalidRows": false, "rows": rows })
    }

    /// Sends the predictions; any HTTP error or per-row error fails the batch (it is retried).
    pub async fn insert_predictions(&self, rows: &[PredictionRow]) -> Result<(), SinkError> {
        for chunk in rows.chunks(ROWS_PER_REQUEST) {
            let mut req = self.http.post(self.url()).json(&Self::body(chunk));
            if let Some(token) = &self.cfg.access_token {
                req = req.bearer_auth(token);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| SinkError::BigQuery(e.to_string()))?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            if !status.is_success() {
                return Err(SinkError::BigQuery(format!("HTTP {status}: {body}")));
            }
            if let Some(errors) = body.get("insertErrors").filter(|e| !e.is_null()) {
                return Err(SinkError::BigQuery(format!("rows refused: {errors}")));
            }
        }
        Ok(())
    }
}
