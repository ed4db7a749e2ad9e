//! simulate → split → publish → consume back, against the real broker and registry.

use fraudstream_common::testing::{local_kafka, read_topic, unique_name};
use fraudstream_schemas::{Codec, Label, Transaction};
use paysim::{simulate::simulate, split::split};
use paysim::{CsvReader, HEADER};
use producer::publish::{publish, LabelDelay, PublishConfig, PublishError};
use rdkafka::Message;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

fn config(input: &Path, test: &str) -> PublishConfig {
    PublishConfig {
        partitions: 3,
        ..PublishConfig::new(
            input.to_path_buf(),
            unique_name(&format!("{test}_tx")),
            unique_name(&format!("{test}_labels")),
        )
    }
}

async fn run(cfg: PublishConfig) -> Result<producer::publish::PublishSummary, PublishError> {
    publish(
        &local_kafka(),
        cfg,
        Arc::new(AtomicBool::new(false)),
        |_| {},
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn simulate_split_publish_and_consume_back() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("paysim.csv");
    simulate(
        1_200_000,
        11,
        &mut std::io::BufWriter::new(std::fs::File::create(&all).unwrap()),
        |_| {},
    )
    .unwrap();
    let (hist, stream) = (
        dir.path().join("historical.csv"),
        dir.path().join("stream.csv"),
    );
    let s = split(&all, 0.9, &hist, &stream).unwrap();
    assert!(
        s.stream_rows >= 100_000,
        "stream part has {} rows",
        s.stream_rows
    );
    assert_eq!(s.historical_rows + s.stream_rows, 1_200_000);

    let n = 100_000;
    let delay_secs = 2.0;
    let mut cfg = config(&stream, "publish_round_trip");
    cfg.limit = Some(n as u64);
    cfg.label_delay = LabelDelay::Seconds(delay_secs, delay_secs);
    let summary = run(cfg.clone()).await.unwrap();
    assert_eq!(
        (summary.sent, summary.acked, summary.failed),
        (n as u64, n as u64, 0)
    );
    assert_eq!(
        (summary.labels_sent, summary.labels_acked),
        (n as u64, n as u64)
    );

    // The CSV rows, by the id the publisher gives them (<prefix>-<line>).
    let mut expected = HashMap::new();
    let mut reader = CsvReader::open(&stream).unwrap();
    while expected.len() < n {
        let (line, row) = reader.next_row().unwrap().unwrap();
        expected.insert(format!("t-{line}"), row.unwrap());
    }

    let kafka = local_kafka();
    let codec = Codec::new(&kafka.schema_registry);
    let messages = read_topic(
        &kafka,
        &cfg.transactions_topic,
        true,
        n + 1,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(
        messages.len(),
        n,
        "exactly the published transactions come back"
    );
    let mut event_times = HashMap::new();
    for m in &messages {
        let tx: Transaction = codec.decode(m.payload().unwrap()).await.unwrap();
        assert_eq!(
            m.key().unwrap(),
            tx.name_orig.as_bytes(),
            "key = origin account"
        );
        let row = expected
            .get(&tx.transaction_id)
            .unwrap_or_else(|| panic!("unexpected id {}", tx.transaction_id));
        assert_eq!(
            (
                tx.step,
                tx.tx_type,
                tx.amount,
                &tx.name_orig,
                tx.oldbalance_org,
                tx.newbalance_orig
            ),
            (
                row.step,
                row.tx_type,
                row.amount,
                &row.name_orig,
                row.oldbalance_org,
                row.newbalance_orig
            )
        );
        assert_eq!(
            (
                &tx.name_dest,
                tx.oldbalance_dest,
                tx.newbalance_dest,
                tx.is_flagged_fraud
            ),
            (
                &row.name_dest,
                row.oldbalance_dest,
                row.newbalance_dest,
                row.is_flagged_fraud
            )
        );
        assert!(
            event_times
                .insert(tx.transaction_id.clone(), tx.event_time)
                .is_none(),
            "duplicate {}",
            tx.transaction_id
        );
    }

    let labels = read_topic(
        &kafka,
        &cfg.labels_topic,
        true,
        n + 1,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(labels.len(), n);
    let mut frauds = 0;
    for m in &labels {
        let label: Label = codec.decode(m.payload().unwrap()).await.unwrap();
        assert_eq!(m.key().unwrap(), label.transaction_id.as_bytes());
        let sent = event_times[&label.transaction_id];
        assert!(
            label.labelled_at - sent >= (delay_secs * 1000.0) as i64 - 1,
            "label of {} came {} ms after the transaction",
            label.transaction_id,
            label.labelled_at - sent
        );
        assert_eq!(label.is_fraud, expected[&label.transaction_id].is_fraud);
        frauds += label.is_fraud as u32;
    }
    assert!(frauds > 0, "the stream part carries fraud labels");
}

fn write_csv(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("input.csv");
    std::fs::write(&p, format!("{HEADER}\n{body}")).unwrap();
    p
}

const MIXED: &str = "\
1,PAYMENT,100.00,C1,500.00,400.00,M1,0.00,0.00,0,0
1,PAYMENT,100.00,C2,500.00
1,TRANSFER,250.50,C3,1000.00,749.50,C4,0.00,250.50,0,0
1,WIRE,1.00,C5,1.00,0.00,C6,0.00,1.00,0,0
2,CASH_OUT,abc,C7,1.00,0.00,C8,0.00,1.00,0,0
2,CASH_IN,10.00,C9,0.00,10.00,C10,50.00,40.00,0,0
";

#[tokio::test(flavor = "multi_thread")]
async fn malformed_rows_are_skipped_and_reported_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&write_csv(dir.path(), MIXED), "publish_malformed");
    let s = run(cfg.clone()).await.unwrap();
    assert_eq!(s.sent, 3);
    assert_eq!(s.bad_row_count, 3);
    let lines: Vec<(u64, &str)> = s
        .bad_rows
        .iter()
        .map(|b| (b.line, b.reason.as_str()))
        .collect();
    assert_eq!(lines[0], (3, "expected 11 columns, found 5"));
    assert_eq!(lines[1].0, 5);
    assert!(lines[1].1.contains("unknown transaction type \"WIRE\""));
    assert_eq!(lines[2], (6, "amount is not a number: \"abc\""));

    let kafka = local_kafka();
    let got = read_topic(
        &kafka,
        &cfg.transactions_topic,
        true,
        4,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let codec = Codec::new(&kafka.schema_registry);
    let mut ids = Vec::new();
    for m in &got {
        ids.push(
            codec
                .decode::<Transaction>(m.payload().unwrap())
                .await
                .unwrap()
                .transaction_id,
        );
    }
    ids.sort();
    assert_eq!(ids, vec!["t-2", "t-4", "t-7"], "the good rows, by line");
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_stops_at_the_first_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&write_csv(dir.path(), MIXED), "publish_strict");
    cfg.strict = true;
    let err = run(cfg).await.unwrap_err().to_string();
    assert!(err.contains("input.csv:3: expected 11 columns"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_header_fails_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.csv");
    std::fs::write(&p, "step,type,amount\n1,PAYMENT,5\n").unwrap();
    let cfg = config(&p, "publish_bad_header");
    let err = run(cfg.clone()).await.unwrap_err().to_string();
    assert!(
        err.contains("bad.csv:1: wrong header") && err.contains("nameOrig"),
        "{err}"
    );
    let got = read_topic(
        &local_kafka(),
        &cfg.transactions_topic,
        false,
        1,
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    assert!(got.is_empty());
}

/// `publish --loop --label-delay 24steps`, as compose runs it: over three passes every
/// transaction gets exactly one label, with the right truth, and the labels waiting for their
/// step stay bounded by the delay (they used to stall after the first pass and pile up).
#[tokio::test(flavor = "multi_thread")]
async fn loop_with_step_delay_labels_every_pass_and_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("paysim.csv");
    simulate(
        60_000,
        5,
        &mut std::io::BufWriter::new(std::fs::File::create(&all).unwrap()),
        |_| {},
    )
    .unwrap();
    let (hist, stream) = (dir.path().join("h.csv"), dir.path().join("s.csv"));
    let rows = split(&all, 0.9, &hist, &stream).unwrap().stream_rows as usize;
    let (passes, delay) = (3usize, 24);

    let mut cfg = config(&stream, "publish_loop");
    cfg.repeat = true;
    cfg.limit = Some((passes * rows) as u64);
    cfg.label_delay = LabelDelay::Steps(delay, delay);
    let summary = run(cfg.clone()).await.unwrap();
    assert_eq!(summary.sent, (passes * rows) as u64);
    assert_eq!(summary.labels_acked, (passes * rows) as u64);

    // The most labels that can rightly wait at once: the rows of any delay+1 consecutive steps,
    // the file's steps wrapping round as the loop does.
    let mut per_step: Vec<(i32, usize)> = Vec::new();
    let mut reader = CsvReader::open(&stream).unwrap();
    while let Some((_, row)) = reader.next_row().unwrap() {
        let step = row.unwrap().step;
        match per_step.last_mut() {
            Some((s, n)) if *s == step => *n += 1,
            _ => per_step.push((step, 1)),
        }
    }
    let (lo, hi) = (per_step[0].0, per_step.last().unwrap().0);
    let mut counts = vec![0usize; (hi - lo + 1) as usize];
    for (s, n) in &per_step {
        counts[(s - lo) as usize] = *n;
    }
    let bound = (0..counts.len())
        .map(|i| {
            (0..=delay as usize)
                .map(|k| counts[(i + k) % counts.len()])
                .sum::<usize>()
        })
        .max()
        .unwrap();
    assert!(
        summary.labels_pending_peak as usize <= bound && bound < rows,
        "pending labels peaked at {}, the delay allows {bound} (of {rows} rows a pass)",
        summary.labels_pending_peak
    );

    let kafka = local_kafka();
    let codec = Codec::new(&kafka.schema_registry);
    let mut truth = HashMap::new();
    for m in read_topic(
        &kafka,
        &cfg.transactions_topic,
        true,
        passes * rows + 1,
        Duration::from_secs(8),
    )
    .await
    .unwrap()
    {
        let tx: Transaction = codec.decode(m.payload().unwrap()).await.unwrap();
        assert!(
            truth.insert(tx.transaction_id, ()).is_none(),
            "duplicate transaction"
        );
    }
    assert_eq!(truth.len(), passes * rows);
    let labels = read_topic(
        &kafka,
        &cfg.labels_topic,
        true,
        passes * rows + 1,
        Duration::from_secs(8),
    )
    .await
    .unwrap();
    let mut labelled = std::collections::HashSet::new();
    for m in &labels {
        let label: Label = codec.decode(m.payload().unwrap()).await.unwrap();
        assert!(
            truth.contains_key(&label.transaction_id),
            "label of an unknown id"
        );
        assert!(
            labelled.insert(label.transaction_id),
            "two labels for one transaction"
        );
    }
    assert_eq!(
        labelled.len(),
        passes * rows,
        "every transaction of every pass is labelled"
    );
}
