//! Optional second destination: BigQuery's streaming insert (`tabledata.insertAll`), built with
//! `--features bigquery` and turned on with `--bigquery`.
//!
//! Every row carries `insertId` = transaction id, so BigQuery's best-effort dedup drops the copies
//! a re-read batch sends again (the same guarantee ClickHouse gets from ReplacingMergeTree).
//! Credentials ([`BigQueryAuth`]): Google's usual chain through `gcp_auth` (a service-account
//! JSON in `GOOGLE_APPLICATION_CREDENTIALS`, application-default credentials, the metadata server
//! on GCP), whose tokens are refreshed before they expire; or a static token; or none for an
//! emulator. BigQuery runs as its own consumer group (see `Destination`), so an outage here never
//! holds back ClickHouse.

use crate::rows::PredictionRow;
use crate::SinkError;
use serde_json::json;

/// How the sink proves who it is to BigQuery.
#[derive(Clone)]
pub enum BigQueryAuth {
    /// Google's credential chain: `GOOGLE_APPLICATION_CREDENTIALS` (service-account JSON),
    /// application-default credentials, the GCP metadata server. Tokens refresh before expiry.
    Google,
    /// A fixed OAuth access token (`gcloud auth print-access-token`): it expires within the hour.
    Token(String),
    /// No credentials (an emulator).
    None,
}

impl std::fmt::Debug for BigQueryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BigQueryAuth::Google => "Google credentials",
            BigQueryAuth::Token(_) => "static token <redacted>",
            BigQueryAuth::None => "none",
        })
    }
}

/// Where predictions go in BigQuery.
#[derive(Debug, Clone)]
pub struct BigQueryConfig {
    /// API root, `https://bigquery.googleapis.com` or an emulator's address.
    pub endpoint: String,
    pub project: String,
    pub dataset: String,
    pub table: String,
    pub auth: BigQueryAuth,
}

/// The scope a streaming insert needs.
const SCOPE: &str = "https://www.googleapis.com/auth/bigquery.insertdata";

enum Credentials {
    Provider(std::sync::Arc<dyn gcp_auth::TokenProvider>),
    Token(String),
    None,
}

pub struct BigQuery {
    cfg: BigQueryConfig,
    http: reqwest::Client,
    credentials: Credentials,
}

/// insertAll accepts at most 50,000 rows and 10 MB per request; a prediction is ~400 bytes of
/// JSON, so 5,000 rows stay well below the size limit.
const ROWS_PER_REQUEST: usize = 5_000;

impl BigQuery {
    /// Finds the credentials `cfg.auth` names; none found is an error that says where to put them.
    pub async fn connect(cfg: BigQueryConfig) -> Result<Self, SinkError> {
        let credentials = match &cfg.auth {
            BigQueryAuth::Google => Credentials::Provider(gcp_auth::provider().await.map_err(|e| {
                SinkError::BigQuery(format!(
                    "no Google credentials ({e}): set GOOGLE_APPLICATION_CREDENTIALS to a service-account JSON file, \
                     run `gcloud auth application-default login`, run on GCP, or pass GOOGLE_OAUTH_ACCESS_TOKEN"
                ))
            })?),
            BigQueryAuth::Token(t) => Credentials::Token(t.clone()),
            BigQueryAuth::None => Credentials::None,
        };
        Ok(BigQuery {
            cfg,
            http: reqwest::Client::new(),
            credentials,
        })
    }

    /// The bearer token for the next request (a cached one until shortly before it expires).
    async fn token(&self) -> Result<Option<String>, SinkError> {
        Ok(match &self.credentials {
            Credentials::Provider(p) => Some(
                p.token(&[SCOPE])
                    .await
                    .map_err(|e| {
                        SinkError::BigQuery(format!("getting a Google access token: {e}"))
                    })?
                    .as_str()
                    .to_string(),
            ),
            Credentials::Token(t) => Some(t.clone()),
            Credentials::None => None,
        })
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
            if let Some(token) = self.token().await? {
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
