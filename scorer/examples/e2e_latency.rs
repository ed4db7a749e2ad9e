//! Benchmark probe: reads committed predictions (read_committed, as any downstream consumer would)
//! and prints the end-to-end latency percentiles, from the transaction's event_time to the moment
//! its prediction became readable. The first 2 s of events (group join, state rebuild, warm-up)
//! are left out: the percentiles describe the steady state. It reads a passthrough's output (the
//! transactions copied) as well, for the latency of the Kafka path alone.
//!
//! `cargo run --release -p scorer --example e2e_latency -- TOPIC COUNT`

use fraudstream_common::testing::{local_kafka, unique_name};
use fraudstream_schemas::{Codec, Prediction, Transaction};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (topic, count): (&str, usize) = (&args[1], args[2].parse().expect("COUNT"));
    let kafka = local_kafka();
    let consumer: StreamConsumer = kafka
        .client_config_with(&[
            ("group.id", &unique_name("latency")),
            ("auto.offset.reset", "latest"),
            ("isolation.level", "read_committed"),
            ("fetch.wait.max.ms", "10"),
        ])
        .unwrap()
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let codec = Codec::new(&kafka.schema_registry);
    println!("ready");
    let mut latencies = Vec::with_capacity(count);
    let (mut seen, mut first_event) = (0usize, i64::MAX);
    while seen < count {
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await else {
            break;
        };
        let now = fraudstream_common::now_millis();
        let payload = m.payload().unwrap_or_default();
        // A passthrough copies the transactions: their event_time is read the same way.
        let event_time = match codec.decode::<Prediction>(payload).await {
            Ok(p) => Some(p.event_time),
            Err(_) => codec
                .decode::<Transaction>(payload)
                .await
                .ok()
                .map(|t| t.event_time),
        };
        if let Some(event_time) = event_time {
            seen += 1;
            first_event = first_event.min(event_time);
            if event_time >= first_event + 2000 {
                latencies.push((now - event_time) as f64);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "n={} p50={:.0} p95={:.0} p99={:.0} ms",
        latencies.len(),
        q(0.5),
        q(0.95),
        q(0.99)
    );
}
