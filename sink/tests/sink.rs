//! The sink against the real broker, registry and ClickHouse: every prediction lands exactly once,
//! also when the sink is SIGKILLed mid-run; undecodable records land in the DLQ with their origin;
//! transactions and labels land in their tables and join for training; a batch ClickHouse refuses
//! for good (a column dropped under the sink) goes to the DLQ and the sink goes on.

mod support;

use fraudstream_common::testing::{headers_map, local_clickhouse, local_kafka, read_topic};
use fraudstream_schemas::{Codec, Label, Transaction, TransactionType};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use sink::rows::PredictionRow;
use std::time::Duration;
use support::*;

const N: u64 = 500_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_prediction_lands_once_and_garbage_goes_to_the_dlq() {
    let kafka = local_kafka();
    let names = Names::new("sink_clean");
    let ch = local_clickhouse(&names.group);
    names.create(&kafka).await;
    // Published twice over (a producer retrying a whole run): still one row per id.
    publish_predictions(&kafka, &names.predictions, 0..N, 0, 100).await;
    publish_predictions(&kafka, &names.predictions, 0..1000, 0, 0).await;
    let child = sink(&kafka, &ch, &names, &[]);
    wait_for_rows(&ch, "predictions", N, Duration::from_secs(180)).await;
    // Asks for one more than expected: a duplicate dead letter would show up in the count.
    let dlq = read_topic(&kafka, &names.dlq, true, 101, Duration::from_secs(15))
        .await
        .unwrap();
    terminate(child);

    assert_eq!(counts(&ch, "predictions").await, Some((N, N)));
    // Values survive the trip: spot-check rows against what was published.
    let rows: Vec<PredictionRow> = ch
        .client()
        .query("SELECT ?fields FROM predictions FINAL WHERE transaction_id IN ('tx-0000000', 'tx-0000001', 'tx-0499999') ORDER BY transaction_id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let i: u64 = row.transaction_id[3..].parse().unwrap();
        assert_eq!(
            row,
            PredictionRow::from(prediction(i)),
            "every column as published"
        );
    }
    let alerts: u64 = ch
        .client()
        .query("SELECT count() FROM predictions FINAL WHERE is_alert = 1")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(alerts, N / 100);

    assert_eq!(dlq.len(), 100, "every garbage record in the DLQ, once");
    for m in &dlq {
        let headers = headers_map(m);
        assert_eq!(headers["source.topic"], names.predictions);
        assert!(
            headers["error"].contains("decod") || headers["error"].contains("schema"),
            "{headers:?}"
        );
        assert!(headers["source.offset"].parse::<i64>().is_ok());
        assert_eq!(m.payload().unwrap(), b"\x00\x00\x00\x00\x07not avro at all");
    }
    drop_database(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_restart_lands_exactly_once() {
    let kafka = local_kafka();
    let names = Names::new("sink_kill");
    let ch = local_clickhouse(&names.group);
    names.create(&kafka).await;
    let first = sink(&kafka, &ch, &names, &[]);
    // Published while the sink runs, at a pace that leaves time to kill it mid-stream.
    let publisher = {
        let (kafka, topic) = (kafka.clone(), names.predictions.clone());
        tokio::spawn(async move { publish_predictions(&kafka, &topic, 0..N, 100_000, 0).await })
    };
    wait_for_rows(&ch, "predictions", 100_000, Duration::from_secs(120)).await;
    kill9(first);
    let landed_at_kill = counts(&ch, "predictions").await.unwrap().0;
    assert!(
        landed_at_kill < N,
        "the kill came after the end ({landed_at_kill} rows)"
    );
    let second = sink(&kafka, &ch, &names, &[]);
    publisher.await.unwrap();
    wait_for_rows(&ch, "predictions", N, Duration::from_secs(180)).await;
    // Let a late duplicate, if any, land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    terminate(second);
    assert_eq!(counts(&ch, "predictions").await, Some((N, N)));
    drop_database(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_labels_land_and_join_for_training() {
    let kafka = local_kafka();
    let names = Names::new("sink_join");
    let ch = local_clickhouse(&names.group);
    names.create(&kafka).await;
    let codec = Codec::new(&kafka.schema_registry);
    let producer: FutureProducer = kafka.client_config().unwrap().create().unwrap();
    let n = 2000u64;
    for i in 0..n {
        let t = Transaction {
            transaction_id: format!("j-{i}"),
            event_time: 1_700_000_000_123 + i as i64 * 1000,
            step: (i / 100) as i32 + 1,
            tx_type: TransactionType::Transfer,
            amount: 10.0 + i as f64,
            name_orig: format!("C{i}"),
            oldbalance_org: 100.0,
            newbalance_orig: 0.0,
            name_dest: format!("C{}", i + 1),
            oldbalance_dest: 0.0,
            newbalance_dest: 0.0,
            is_flagged_fraud: false,
        };
        let payload = codec.encode(&names.transactions, &t).await.unwrap();
        producer
            .send(
                FutureRecord::to(&names.transactions)
                    .key(&t.name_orig)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        // Labels for the first half only: the rest are still "in the mail".
        if i < n / 2 {
            let l = Label::from_file(t.transaction_id.clone(), i % 10 == 0, 1_700_000_100_000);
            let payload = codec.encode(&names.labels, &l).await.unwrap();
            producer
                .send(
                    FutureRecord::to(&names.labels)
                        .key(&l.transaction_id)
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    }
    let child = sink(&kafka, &ch, &names, &[]);
    wait_for_rows(&ch, "transactions", n, Duration::from_secs(60)).await;
    wait_for_rows(&ch, "labels", n / 2, Duration::from_secs(60)).await;
    terminate(child);
    let (rows, frauds, event_ms): (u64, u64, u64) = ch
        .client()
        .query("SELECT count(), sum(is_fraud), sum(event_ms) FROM labelled_transactions")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((rows, frauds), (n / 2, n / 20));
    assert_eq!(
        event_ms,
        123 * n / 2,
        "milliseconds kept next to the DateTime"
    );
    let amount: f64 = ch
        .client()
        .query("SELECT amount FROM transactions FINAL WHERE transaction_id = 'j-7'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(amount, 17.0);
    drop_database(&ch).await;
}

/// A column dropped under a running sink: ClickHouse refuses every insert for good (code 16). The
/// sink dead-letters the batch's records with the refusal as their reason (each source record
/// once) instead of retrying for ever, and goes on: once the column is back, new predictions land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_clickhouse_refuses_for_good_goes_to_the_dlq() {
    const REFUSED: u64 = 3_000;
    let kafka = local_kafka();
    let names = Names::new("sink_refused");
    let ch = local_clickhouse(&names.group);
    names.create(&kafka).await;
    ch.migrate().await.unwrap();
    let alter = |sql: &'static str| {
        let ch = ch.clone();
        async move { ch.client().query(sql).execute().await.unwrap() }
    };
    alter("ALTER TABLE predictions DROP COLUMN scored_ms").await;
    let child = sink(&kafka, &ch, &names, &[]);
    publish_predictions(&kafka, &names.predictions, 0..REFUSED, 0, 0).await;
    let dead = read_topic(
        &kafka,
        &names.dlq,
        false,
        REFUSED as usize,
        Duration::from_secs(90),
    )
    .await
    .unwrap();
    let mut offsets = std::collections::HashSet::new();
    for m in &dead {
        let h = headers_map(m);
        assert!(h["error"].contains("ClickHouse refused the batch"), "{h:?}");
        assert!(h["error"].contains("Code: 16"), "{h:?}");
        assert_eq!(h["source.topic"], names.predictions);
        offsets.insert((h["source.partition"].clone(), h["source.offset"].clone()));
    }
    assert_eq!(
        (dead.len(), offsets.len()),
        (REFUSED as usize, REFUSED as usize)
    );

    alter("ALTER TABLE predictions ADD COLUMN scored_ms UInt16 AFTER scored_at").await;
    publish_predictions(&kafka, &names.predictions, REFUSED..REFUSED + 1000, 0, 0).await;
    wait_for_rows(&ch, "predictions", 1000, Duration::from_secs(90)).await;
    terminate(child);
    assert_eq!(counts(&ch, "predictions").await, Some((1000, 1000)));
    drop_database(&ch).await;
}
