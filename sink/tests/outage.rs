//! ClickHouse stopped for 20 s in the middle of a run: the sink retries, keeps its partitions,
//! and once ClickHouse is back every prediction is there exactly once. Uses a ClickHouse server of
//! its own (same binary and config as the local service, other ports), so stopping it disturbs no
//! other test. Likewise a schema registry of its own, down while the sink starts: records wait
//! for it instead of going to the dead-letter topic.

mod support;

use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::testing::{
    free_port, local_kafka, read_topic, start_clickhouse, start_registry, terminate_and_wait,
    unique_name,
};
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_20s_mid_run_loses_nothing() {
    const N: u64 = 500_000;
    let kafka = local_kafka();
    let names = Names::new("sink_outage");
    let dir = std::env::temp_dir().join(unique_name("ch_outage"));
    let (http, tcp) = (free_port(), free_port());
    let ch = ClickHouseArgs::new(&format!("http://127.0.0.1:{http}"), "outage");
    let mut server = start_clickhouse(&dir, http, tcp).await;
    names.create(&kafka).await;
    let sink_child = sink(&kafka, &ch, &names, &[]);
    let publisher = {
        let (kafka, topic) = (kafka.clone(), names.predictions.clone());
        tokio::spawn(async move { publish_predictions(&kafka, &topic, 0..N, 20_000, 0).await })
    };
    wait_for_rows(&ch, "predictions", 60_000, Duration::from_secs(120)).await;
    server.kill().unwrap();
    server.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    server = start_clickhouse(&dir, http, tcp).await;
    publisher.await.unwrap();
    wait_for_rows(&ch, "predictions", N, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    terminate(sink_child);
    assert_eq!(counts(&ch, "predictions").await, Some((N, N)));
    server.kill().unwrap();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The registry is down when the sink starts (a deploy, a crash): the sink waits for it and
/// dead-letters nothing; once it is back every prediction lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_makes_records_wait_not_dead_letter() {
    const N: u64 = 10_000;
    let dir = std::env::temp_dir().join(unique_name("sink_registry_outage"));
    let port = free_port();
    let mut kafka = local_kafka();
    kafka.schema_registry = format!("http://127.0.0.1:{port}/apis/ccompat/v7");
    let mut registry = start_registry(port, &dir).await;
    let names = Names::new("sink_registry_outage");
    let ch = fraudstream_common::testing::local_clickhouse(&names.group);
    names.create(&kafka).await;
    publish_predictions(&kafka, &names.predictions, 0..N, 0, 0).await;
    terminate_and_wait(&mut registry);

    let child = sink(&kafka, &ch, &names, &[]);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        counts(&ch, "predictions").await.map_or(0, |c| c.0),
        0,
        "nothing decodable yet"
    );
    let _registry = start_registry(port, &dir).await;
    wait_for_rows(&ch, "predictions", N, Duration::from_secs(90)).await;
    terminate(child);
    let dead = read_topic(&kafka, &names.dlq, false, 1, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(
        dead.is_empty(),
        "{} records dead-lettered for the registry's outage",
        dead.len()
    );
    drop_database(&ch).await;
    let _ = std::fs::remove_dir_all(&dir);
}
