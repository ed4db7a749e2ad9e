//! A table created in the real ClickHouse (Debian's 18.16 locally) and read back.

use clickhouse::Row;
use fraudstream_common::testing::{local_clickhouse, unique_name};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
struct Point {
    id: String,
    score: f64,
    is_alert: u8,
}

#[tokio::test]
async fn table_created_written_and_read_back() {
    let ch = local_clickhouse(&unique_name("ch_round_trip"));
    ch.server_client()
        .query(&format!("CREATE DATABASE IF NOT EXISTS {}", ch.database))
        .execute()
        .await
        .unwrap();
    let client = ch.client();
    client
        .query(
            "CREATE TABLE points (id String, score Float64, is_alert UInt8) \
             ENGINE = ReplacingMergeTree() ORDER BY id",
        )
        .execute()
        .await
        .unwrap();
    let rows: Vec<Point> = (0..1000)
        .map(|i| Point {
            id: format!("tx-{i:04}"),
            score: i as f64 / 1000.0,
            is_alert: (i % 100 == 0) as u8,
        })
        .collect();
    let mut insert = client.insert::<Point>("points").await.unwrap();
    for r in &rows {
        insert.write(r).await.unwrap();
    }
    insert.end().await.unwrap();
    // The same rows again: ReplacingMergeTree + FINAL shows each id once.
    let mut insert = client.insert::<Point>("points").await.unwrap();
    for r in &rows {
        insert.write(r).await.unwrap();
    }
    insert.end().await.unwrap();

    let back: Vec<Point> = client
        .query("SELECT ?fields FROM points FINAL ORDER BY id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(back, rows);
    let alerts: u64 = client
        .query("SELECT count() FROM points FINAL WHERE is_alert = 1")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(alerts, 10);
    ch.server_client()
        .query(&format!("DROP DATABASE {}", ch.database))
        .execute()
        .await
        .unwrap();
}
