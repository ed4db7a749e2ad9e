//! `--bigquery`: the sink streams predictions to BigQuery's insertAll as well as to ClickHouse.
//! No BigQuery emulator builds here, so a local HTTP server stands in for the API (and for
//! Google's token endpoint) and the tests check the requests the sink sends: the URL, the bearer
//! token, one row per prediction with insertId = transaction id, a refused request retried until
//! accepted (nothing dropped), a BigQuery outage that never holds back ClickHouse, and a
//! service-account JSON whose tokens are fetched and refreshed by the sink.

mod support;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use fraudstream_common::testing::{local_clickhouse, local_kafka};
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

#[derive(Default)]
struct Received {
    /// insertId → how many times it arrived.
    ids: HashMap<String, u32>,
    requests: u32,
    refused: u32,
    bad: Vec<String>,
}

type Shared = Arc<Mutex<Received>>;

async fn insert_all(
    State(state): State<Shared>,
    Path((project, dataset, table)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    let mut r = state.lock().unwrap();
    r.requests += 1;
    // The first request fails like a BigQuery outage: the sink must retry the whole batch.
    if r.refused == 0 {
        r.refused += 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": {"message": "backend error"}})),
        );
    }
    if (project.as_str(), dataset.as_str(), table.as_str()) != ("proj", "ds", "predictions") {
        r.bad.push(format!("path {project}/{dataset}/{table}"));
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer test-token") {
        r.bad.push("missing bearer token".into());
    }
    for row in body["rows"].as_array().unwrap() {
        let id = row["insertId"].as_str().unwrap().to_string();
        if row["json"]["transaction_id"].as_str() != Some(id.as_str()) {
            r.bad
                .push(format!("insertId {id} is not the row's transaction id"));
        }
        *r.ids.entry(id).or_default() += 1;
    }
    (
        StatusCode::OK,
        Json(serde_json::json!({"kind": "bigquery#tableDataInsertAllResponse"})),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_stream_to_bigquery_with_insert_ids() {
    const N: u64 = 20_000;
    let state: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}/insertAll",
            post(insert_all),
        )
        // BigQuery takes up to 10 MB per request; axum's default limit is 2 MB.
        .layer(axum::extract::DefaultBodyLimit::max(10 << 20))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let kafka = local_kafka();
    let names = Names::new("sink_bigquery");
    let ch = local_clickhouse(&names.group);
    names.create(&kafka).await;
    publish_predictions(&kafka, &names.predictions, 0..N, 0, 0).await;
    let child = sink(
        &kafka,
        &ch,
        &names,
        &[
            "--bigquery",
            "--bigquery-project",
            "proj",
            "--bigquery-dataset",
            "ds",
            "--bigquery-endpoint",
            &endpoint,
            "--bigquery-token",
            "test-token",
        ],
    );
    wait_for_rows(&ch, "predictions", N, Duration::from_secs(60)).await;
    let started = std::time::Instant::now();
    while (state.lock().unwrap().ids.len() as u64) < N
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(child);
    {
        let r = state.lock().unwrap();
        assert!(r.bad.is_empty(), "{:?}", r.bad);
        assert_eq!(r.refused, 1);
        assert_eq!(r.ids.len() as u64, N, "every prediction reached BigQuery");
        assert!(
            r.ids.values().all(|n| *n == 1),
            "a refused request is not half-counted: each row arrived once after the retry"
        );
    }
    drop_database(&ch).await;
}

/// A BigQuery stand-in that refuses everything while `down` is set and counts what it accepts,
/// by insertId and by bearer token.
#[derive(Default)]
struct Flaky {
    down: bool,
    ids: HashMap<String, u32>,
    tokens: HashMap<String, u32>,
    /// Token requests to the stand-in token endpoint, and their grant types.
    token_grants: Vec<String>,
}

type FlakyState = Arc<Mutex<Flaky>>;

async fn flaky_insert(
    State(state): State<FlakyState>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    let mut f = state.lock().unwrap();
    if f.down {
        let outage = serde_json::json!({"error": {"message": "backend error"}});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(outage));
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    *f.tokens.entry(token).or_default() += 1;
    for row in body["rows"].as_array().unwrap() {
        *f.ids
            .entry(row["insertId"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    (StatusCode::OK, Json(serde_json::json!({})))
}

/// Google's OAuth token endpoint as a service account sees it: a signed JWT in, a short-lived
/// access token out (valid 22 s: gcp_auth renews 20 s before expiry, so about every 2 s).
async fn token(State(state): State<FlakyState>, body: String) -> Json<serde_json::Value> {
    let mut f = state.lock().unwrap();
    let grant = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("grant_type="))
        .unwrap_or("")
        .to_string();
    f.token_grants.push(grant);
    let n = f.token_grants.len();
    Json(
        serde_json::json!({"access_token": format!("sa-token-{n}"), "expires_in": 22, "token_type": "Bearer"}),
    )
}

async fn flaky_bigquery(state: FlakyState) -> String {
    let app = Router::new()
        .route(
            "/bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}/insertAll",
            post(flaky_insert),
        )
        .route("/token", post(token))
        .layer(axum::extract::DefaultBodyLimit::max(10 << 20))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    endpoint
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bigquery_outage_never_holds_back_clickhouse() {
    const N: u64 = 20_000;
    let state = FlakyState::default();
    state.lock().unwrap().down = true;
    let endpoint = flaky_bigquery(state.clone()).await;
    let kafka = local_kafka();
    let names = Names::new("sink_bigquery_outage");
    let ch = local_clickhouse(&names.group);
    names.create(&kafka).await;
    publish_predictions(&kafka, &names.predictions, 0..N, 0, 0).await;
    // Many small batches: with one writer for both destinations, the first would block the rest.
    let child = sink(
        &kafka,
        &ch,
        &names,
        &[
            "--bigquery",
            "--bigquery-project",
            "p",
            "--bigquery-endpoint",
            &endpoint,
            "--bigquery-token",
            "static-token",
            "--batch-rows",
            "1000",
        ],
    );
    // BigQuery refuses everything, and every row still lands in ClickHouse.
    wait_for_rows(&ch, "predictions", N, Duration::from_secs(60)).await;
    assert!(state.lock().unwrap().ids.is_empty());
    // BigQuery comes back: its own consumer group picks up where it stopped, nothing lost.
    state.lock().unwrap().down = false;
    wait_until(
        "every prediction in BigQuery",
        Duration::from_secs(60),
        || state.lock().unwrap().ids.len() as u64 >= N,
    )
    .await;
    terminate(child);
    {
        let f = state.lock().unwrap();
        assert_eq!(f.ids.len() as u64, N);
        assert!(f.ids.values().all(|n| *n == 1), "each row accepted once");
        assert_eq!(f.tokens.keys().collect::<Vec<_>>(), ["Bearer static-token"]);
    }
    drop_database(&ch).await;
}

/// GOOGLE_APPLICATION_CREDENTIALS names a service-account JSON: the sink signs a JWT with its
/// key, trades it for access tokens at the account's token_uri, and renews them before expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_file_gets_and_renews_tokens() {
    const N: u64 = 4_000;
    let state = FlakyState::default();
    let endpoint = flaky_bigquery(state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let account = serde_json::json!({
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "k1",
        "private_key": std::fs::read_to_string(&key).unwrap(),
        "client_email": "sink@p.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": format!("{endpoint}/token"),
    });
    let credentials = dir.path().join("sa.json");
    std::fs::write(&credentials, account.to_string()).unwrap();

    let kafka = local_kafka();
    let names = Names::new("sink_bigquery_sa");
    let ch = local_clickhouse(&names.group);
    names.create(&kafka).await;
    let child = sink_with_env(
        &kafka,
        &ch,
        &names,
        &[
            "--bigquery",
            "--bigquery-project",
            "p",
            "--bigquery-endpoint",
            &endpoint,
            "--batch-rows",
            "500",
        ],
        &[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            credentials.to_str().unwrap(),
        )],
    );
    // Two waves 3 s apart: the first token has expired (for gcp_auth) by the second.
    publish_predictions(&kafka, &names.predictions, 0..N / 2, 0, 0).await;
    wait_until(
        "the first wave in BigQuery",
        Duration::from_secs(60),
        || state.lock().unwrap().ids.len() as u64 >= N / 2,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    publish_predictions(&kafka, &names.predictions, N / 2..N, 0, 0).await;
    wait_until(
        "the second wave in BigQuery",
        Duration::from_secs(60),
        || state.lock().unwrap().ids.len() as u64 >= N,
    )
    .await;
    terminate(child);
    {
        let f = state.lock().unwrap();
        assert!(
            f.token_grants.len() >= 2 && f.token_grants.iter().all(|g| g.contains("jwt-bearer")),
            "JWT-bearer grants: {:?}",
            f.token_grants
        );
        assert!(
            f.tokens.keys().all(|t| t.starts_with("Bearer sa-token-")) && f.tokens.len() >= 2,
            "inserts carried the account's tokens, renewed: {:?}",
            f.tokens
        );
    }
    drop_database(&ch).await;
}
