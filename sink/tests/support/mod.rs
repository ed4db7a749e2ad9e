//! Helpers shared by the sink's integration tests: a stream of predictions on a real topic, the
//! sink binary as a child process, and counts read back from the real ClickHouse.

#![allow(dead_code)]

use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
use fraudstream_common::testing::{service_args, unique_name, Process};
use fraudstream_schemas::{Codec, Prediction, Reason, TransactionType};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Names {
    pub transactions: String,
    pub predictions: String,
    pub labels: String,
    pub dlq: String,
    pub group: String,
}

impl Names {
    pub fn new(test: &str) -> Self {
        let base = unique_name(test);
        Names {
            transactions: format!("{base}_tx"),
            predictions: format!("{base}_pred"),
            labels: format!("{base}_labels"),
            dlq: format!("{base}_dlq"),
            group: format!("{base}_sink"),
        }
    }

    pub async fn create(&self, kafka: &KafkaArgs) {
        let specs: Vec<TopicSpec> = [&self.transactions, &self.predictions, &self.labels]
            .iter()
            .map(|t| TopicSpec::new(t, 6))
            .collect();
        ensure_topics(&kafka.admin().unwrap(), &specs)
            .await
            .unwrap();
    }
}

/// The `i`-th test prediction: id `tx-<i>`, every 100th an alert with reasons.
pub fn prediction(i: u64) -> Prediction {
    let alert = i.is_multiple_of(100);
    Prediction {
        transaction_id: format!("tx-{i:07}"),
        name_orig: format!("C{}", i % 50_000),
        tx_type: TransactionType::ALL[(i % 5) as usize],
        amount: (i % 10_000) as f64 * 1.5,
        event_time: 1_700_000_000_000 + i as i64 * 7,
        scored_at: 1_700_000_000_050 + i as i64 * 7,
        score: if alert { 0.97 } else { (i % 90) as f64 / 100.0 },
        is_alert: alert,
        threshold: 0.95,
        model_name: "paysim".into(),
        model_version: 1 + (i % 2) as i32,
        challenger_score: i.is_multiple_of(3).then_some(0.1),
        challenger_version: i.is_multiple_of(3).then_some(3),
        top_reasons: if alert {
            vec![Reason {
                feature: "error_balance_orig".into(),
                contribution: 2.5,
            }]
        } else {
            Vec::new()
        },
        rule_hits: if alert && i.is_multiple_of(2) {
            vec![fraudstream_schemas::RuleHit {
                id: "big-transfer".into(),
                version: 2,
                action: fraudstream_schemas::RuleAction::Alert,
            }]
        } else {
            Vec::new()
        },
        rules_version: 5,
    }
}

/// Publishes predictions `range` to `topic` at about `rate` per second (0 = as fast as possible),
/// plus `garbage` undecodable records spread through the stream. Waits for every delivery.
pub async fn publish_predictions(
    kafka: &KafkaArgs,
    topic: &str,
    range: std::ops::Range<u64>,
    rate: u64,
    garbage: u64,
) {
    let codec = Codec::new(&kafka.schema_registry);
    let id = codec.schema_id::<Prediction>(topic).await.unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = kafka
        .client_config_with(&[
            ("enable.idempotence", "true"),
            ("linger.ms", "20"),
            ("compression.type", "lz4"),
            ("queue.buffering.max.messages", "1000000"),
        ])
        .unwrap()
        .create()
        .unwrap();
    let every = (range.end - range.start)
        .checked_div(garbage)
        .unwrap_or(u64::MAX);
    let started = Instant::now();
    let first = range.start;
    for i in range {
        let p = prediction(i);
        let payload = Codec::encode_with_id(id, &p).unwrap();
        send(&producer, topic, &p.name_orig, &payload);
        if (i - first) % every == every / 2 {
            send(
                &producer,
                topic,
                "garbage",
                b"\x00\x00\x00\x00\x07not avro at all",
            );
        }
        if rate > 0 && i % 1000 == 0 {
            let due = Duration::from_secs_f64((i - first) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    payload: &[u8],
) {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// The sink binary on the test's topics and database.
pub fn sink(kafka: &KafkaArgs, ch: &ClickHouseArgs, n: &Names, extra: &[&str]) -> Process {
    sink_with_env(kafka, ch, n, extra, &[])
}

/// [`sink`] with extra environment variables.
pub fn sink_with_env(
    kafka: &KafkaArgs,
    ch: &ClickHouseArgs,
    n: &Names,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Process {
    Command::new(env!("CARGO_BIN_EXE_sink"))
        .envs(env.iter().copied())
        .args(service_args(kafka, Some(ch)))
        .args([
            "--transactions-topic",
            &n.transactions,
            "--predictions-topic",
            &n.predictions,
        ])
        .args([
            "--labels-topic",
            &n.labels,
            "--dlq-topic",
            &n.dlq,
            "--group",
            &n.group,
        ])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--batch-rows",
            "20000",
            "--batch-ms",
            "200",
        ])
        .args(["--max-backoff-ms", "1000"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap()
        .into()
}

/// `SELECT count(), uniqExact(transaction_id) FROM <table> FINAL`, or None while ClickHouse or the
/// table is not there.
pub async fn counts(ch: &ClickHouseArgs, table: &str) -> Option<(u64, u64)> {
    ch.client()
        .query(&format!(
            "SELECT count(), uniqExact(transaction_id) FROM {table} FINAL"
        ))
        .fetch_one::<(u64, u64)>()
        .await
        .ok()
}

/// Waits until `table` holds `expected` distinct rows (FINAL), or panics after `timeout`.
pub async fn wait_for_rows(ch: &ClickHouseArgs, table: &str, expected: u64, timeout: Duration) {
    let started = Instant::now();
    loop {
        let c = counts(ch, table).await;
        if c.is_some_and(|(n, _)| n >= expected) {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{table}: {c:?} rows after {timeout:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Stops a child with SIGTERM (clean shutdown) and checks it exited 0.
pub fn terminate(mut child: Process) {
    send_signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "sink exited with {status} on SIGTERM");
}

/// SIGKILL: no chance to flush or commit.
pub fn kill9(mut child: Process) {
    send_signal(child.id(), "KILL");
    let _ = child.wait();
}

fn send_signal(pid: u32, signal: &str) {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
}

/// Drops the test's database (on every replica of a cluster).
pub async fn drop_database(ch: &ClickHouseArgs) {
    let _ = ch
        .server_client()
        .query(&format!(
            "DROP DATABASE IF EXISTS {}{}",
            ch.database,
            ch.on_cluster()
        ))
        .execute()
        .await;
}

/// Labels for predictions `range`: the alerts (every 100th) are fraud, and so is every 1000th + 1
/// (a fraud the model missed).
pub async fn publish_labels(kafka: &KafkaArgs, topic: &str, range: std::ops::Range<u64>) {
    let codec = Codec::new(&kafka.schema_registry);
    let id = codec
        .schema_id::<fraudstream_schemas::Label>(topic)
        .await
        .unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = kafka
        .client_config_with(&[("linger.ms", "20")])
        .unwrap()
        .create()
        .unwrap();
    for i in range {
        let label = fraudstream_schemas::Label::from_file(
            prediction(i).transaction_id,
            i % 100 == 0 || i % 1000 == 1,
            1_700_000_500_000 + i as i64,
        );
        let payload = Codec::encode_with_id(id, &label).unwrap();
        send(&producer, topic, &label.transaction_id, &payload);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}
