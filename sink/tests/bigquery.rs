//! `--bigquery`: the sink streams predictions to BigQuery's insertAll as well as to ClickHouse.
//! No BigQuery emulator builds here, so a local HTTP server stands in for the API and the test
//! checks the requests the sink sends: the URL, the bearer token, one row per prediction with
//! insertId = transaction id, and a refused request retried until accepted (nothing dropped).

mod support;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use fraudstream_common::testing::{local_clickhouse, local_kafka};
use std::collections::HashMap;
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
