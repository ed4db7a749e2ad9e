//! ClickHouse stopped for 20 s in the middle of a run: the sink retries, keeps its partitions,
//! and once ClickHouse is back every prediction is there exactly once. Uses a ClickHouse server of
//! its own (same binary and config as the local service, other ports), so stopping it disturbs no
//! other test.

mod support;

use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::testing::Process;
use fraudstream_common::testing::{local_kafka, unique_name};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_clickhouse(dir: &Path, http: u16, tcp: u16) -> Process {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/local/clickhouse-config.sh"
    );
    let ok = Command::new(script)
        .args([dir.to_str().unwrap(), &http.to_string(), &tcp.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    Command::new("clickhouse-server")
        .arg(format!("--config-file={}/config.xml", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("clickhouse-server (deploy/local/install.sh installs it)")
        .into()
}

async fn wait_up(ch: &ClickHouseArgs) {
    for _ in 0..120 {
        if ch.server_client().query("SELECT 1").execute().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("private ClickHouse did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_20s_mid_run_loses_nothing() {
    const N: u64 = 500_000;
    let kafka = local_kafka();
    let names = Names::new("sink_outage");
    let dir = std::env::temp_dir().join(unique_name("ch_outage"));
    let (http, tcp) = (free_port(), free_port());
    let ch = ClickHouseArgs::new(&format!("http://127.0.0.1:{http}"), "outage");
    let mut server = start_clickhouse(&dir, http, tcp);
    wait_up(&ch).await;
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
    server = start_clickhouse(&dir, http, tcp);
    wait_up(&ch).await;
    publisher.await.unwrap();
    wait_for_rows(&ch, "predictions", N, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    terminate(sink_child);
    assert_eq!(counts(&ch, "predictions").await, Some((N, N)));
    server.kill().unwrap();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
