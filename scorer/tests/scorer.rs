//! The scorer against the real broker and registry: three instances in one group, one SIGKILLed
//! mid-stream, a model swap, refused models and malformed records, all in one stream; and the
//! per-account state carried across a restart.

use fraudstream_common::features::{
    push_features, AccountFeatures, AccountHistory, TxView, N_FEATURES,
};
use fraudstream_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
use fraudstream_common::model::{pack_model_text, LoadedModel};
use fraudstream_common::testing::{
    headers_map, local_kafka, otlp_sink, service_args, unique_name, workspace_bin, Process,
};
use fraudstream_schemas::{Codec, ModelRecord, Prediction, Transaction};
use paysim::CsvReader;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A small LightGBM model trained on `csv` with the shared feature code, to predict `label`.
fn train(csv: &Path, label: impl Fn(bool, &AccountFeatures) -> bool) -> String {
    let mut reader = CsvReader::open(csv).unwrap();
    let (mut rows, mut labels, mut history) = (Vec::new(), Vec::new(), AccountHistory::default());
    let mut i = 0i64;
    while let Some((_, row)) = reader.next_row().unwrap() {
        let row = row.unwrap();
        let account = history.observe(&row.name_orig, i, row.step, row.amount);
        push_features(&row.view(), account, &mut rows);
        labels.push(label(row.is_fraud, &account) as u8 as f32);
        i += 1;
    }
    let data = lightgbm3::Dataset::from_slice(&rows, &labels, N_FEATURES as i32, true).unwrap();
    let params = serde_json::json!({"objective": "binary", "num_iterations": 30, "num_leaves": 15,
        "learning_rate": 0.1, "verbose": -1, "num_threads": 2});
    lightgbm3::Booster::train(data, &params)
        .unwrap()
        .save_string()
        .unwrap()
}

fn model_record(version: i32, text: &str, threshold: f64) -> ModelRecord {
    let (compression, model_text) = pack_model_text(text);
    ModelRecord {
        version,
        compression,
        model_text,
        ..scorer::bootstrap_record("paysim", String::new(), threshold)
    }
}

struct Topics {
    transactions: String,
    labels: String,
    predictions: String,
    alerts: String,
    dlq: String,
    models: String,
    group: String,
}

impl Topics {
    /// Fresh names, with the transactions topic (`partitions`) and the compacted models topic
    /// created (the scorer creates the others).
    async fn create(kafka: &KafkaArgs, tag: &str, partitions: i32) -> Self {
        let name = |what: &str| unique_name(&format!("{tag}_{what}"));
        let t = Topics {
            transactions: name("tx"),
            labels: name("labels"),
            predictions: name("predictions"),
            alerts: name("alerts"),
            dlq: name("dlq"),
            models: name("models"),
            group: name("group"),
        };
        ensure_topics(
            &kafka.admin().unwrap(),
            &[
                TopicSpec::new(&t.transactions, partitions),
                TopicSpec::new(&t.models, 1).compacted(),
            ],
            1,
        )
        .await
        .unwrap();
        t
    }
}

/// `rows` simulated PaySim rows in `dir/paysim.csv`, and how many were written.
fn simulate(dir: &Path, rows: u64, seed: u64) -> (std::path::PathBuf, u64) {
    let csv = dir.join("paysim.csv");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
    let summary = paysim::simulate::simulate(rows, seed, &mut w, |_| {}).unwrap();
    std::io::Write::flush(&mut w).unwrap();
    (csv, summary.rows)
}

/// `producer publish` of `csv` to the test's topics, labels at once; add flags and run it.
fn publish(kafka: &KafkaArgs, csv: &Path, t: &Topics) -> Command {
    let mut command = Command::new(workspace_bin("producer"));
    command
        .arg("publish")
        .args(service_args(kafka, None))
        .arg("--input")
        .arg(csv)
        .args(["--transactions-topic", &t.transactions])
        .args(["--labels-topic", &t.labels, "--label-delay", "0"])
        .stdout(std::process::Stdio::null());
    command
}

fn scorer(kafka: &KafkaArgs, t: &Topics, instance: &str) -> Process {
    scorer_command(kafka, t, instance).spawn().unwrap().into()
}

fn scorer_command(kafka: &KafkaArgs, t: &Topics, instance: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scorer"));
    command
        .args(service_args(kafka, None))
        .args([
            "--instance-id",
            instance,
            "--group",
            &t.group,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--transactions-topic",
            &t.transactions,
            "--predictions-topic",
            &t.predictions,
        ])
        .args([
            "--alerts-topic",
            &t.alerts,
            "--dlq-topic",
            &t.dlq,
            "--models-topic",
            &t.models,
        ])
        .args(["--commit-interval-ms", "100"])
        .env("RUST_LOG", "warn");
    command
}

/// Reads a topic (read_committed) until it has been quiet for `quiet` after `expected` arrived.
fn drain(
    kafka: &KafkaArgs,
    topic: &str,
    expected: usize,
    quiet: Duration,
    deadline: Duration,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = kafka
        .client_config_with(&[
            ("group.id", &unique_name("drain")),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
        ])
        .unwrap()
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let (start, mut last) = (Instant::now(), Instant::now());
    let mut out = Vec::new();
    while start.elapsed() < deadline && !(out.len() >= expected && last.elapsed() >= quiet) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(m.detach());
            last = Instant::now();
        }
    }
    out
}

async fn send_raw(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn three_scorers_one_killed_exactly_one_prediction_each_and_a_live_model_swap() {
    let kafka = local_kafka();
    let t = Topics::create(&kafka, "scorer", 6).await;

    // Data and a first model.
    let dir = tempfile::tempdir().unwrap();
    let (all, _) = simulate(dir.path(), 300_000, 5);
    let (hist, stream) = (
        dir.path().join("historical.csv"),
        dir.path().join("stream.csv"),
    );
    paysim::split::split(&all, 0.9, &hist, &stream).unwrap();
    let model_text = train(&hist, |is_fraud, _| is_fraud);
    let codec = Codec::new(&kafka.schema_registry);
    let raw: FutureProducer = kafka.client_config().unwrap().create().unwrap();
    let v1 = codec
        .encode(&t.models, &model_record(1, &model_text, 0.5))
        .await
        .unwrap();
    send_raw(&raw, &t.models, "paysim", &v1).await;

    let mut scorers: Vec<Process> = (0..3)
        .map(|i| scorer(&kafka, &t, &unique_name(&format!("scorer{i}"))))
        .collect();

    // 200k transactions at 40k/s (the stream part, looped with fresh ids).
    let n = 200_000u64;
    let mut publisher = publish(&kafka, &stream, &t)
        .args([
            "--rate",
            "40000",
            "--limit",
            &n.to_string(),
            "--loop",
            "--id-prefix",
            "s",
        ])
        .spawn()
        .unwrap();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Malformed records and refused models, mid-stream.
    for i in 0..20 {
        send_raw(&raw, &t.transactions, &format!("C{i}"), b"not avro at all").await;
    }
    send_raw(&raw, &t.models, "paysim", b"\x00\x00\x00\x00\x01garbage").await;
    let bad_text = codec
        .encode(
            &t.models,
            &model_record(7, "tree\nthis is not a model", 0.5),
        )
        .await
        .unwrap();
    send_raw(&raw, &t.models, "paysim", &bad_text).await;
    let mut wrong_features = model_record(8, &model_text, 0.5);
    wrong_features.feature_names.pop();
    send_raw(
        &raw,
        &t.models,
        "paysim",
        &codec.encode(&t.models, &wrong_features).await.unwrap(),
    )
    .await;

    tokio::time::sleep(Duration::from_millis(1000)).await;
    scorers[0].kill().unwrap(); // SIGKILL, mid-stream, mid-transaction
    scorers[0].wait().unwrap();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let v2 = codec
        .encode(&t.models, &model_record(2, &model_text, 0.9))
        .await
        .unwrap();
    send_raw(&raw, &t.models, "paysim", &v2).await;
    let v2_sent_at = fraudstream_common::now_millis();

    let published = tokio::task::spawn_blocking(move || publisher.wait().unwrap());
    assert!(
        published.await.unwrap().success(),
        "every transaction was acknowledged"
    );

    let messages = tokio::task::spawn_blocking({
        let kafka = kafka.clone();
        let topic = t.predictions.clone();
        move || {
            drain(
                &kafka,
                &topic,
                n as usize,
                Duration::from_secs(8),
                Duration::from_secs(150),
            )
        }
    })
    .await
    .unwrap();
    let mut ids = HashSet::new();
    let mut versions: HashMap<i32, u64> = HashMap::new();
    let mut alerts = 0;
    for m in &messages {
        let p: Prediction = codec.decode(m.payload().unwrap()).await.unwrap();
        assert!(
            ids.insert(p.transaction_id.clone()),
            "duplicate prediction for {}",
            p.transaction_id
        );
        *versions.entry(p.model_version).or_default() += 1;
        assert!((0.0..=1.0).contains(&p.score));
        assert_eq!(p.is_alert, p.score >= p.threshold);
        if p.is_alert {
            alerts += 1;
            assert_eq!(p.top_reasons.len(), 3, "an alert carries its top 3 reasons");
        }
        if p.scored_at > v2_sent_at + 5_000 {
            assert_eq!(
                p.model_version, 2,
                "5 s after v2 was published every prediction uses it"
            );
        }
        assert!(
            p.model_version == 1 || p.model_version == 2,
            "refused models never serve: {}",
            p.model_version
        );
    }
    assert_eq!(
        ids.len() as u64,
        n,
        "exactly one prediction per transaction (versions {versions:?})"
    );
    assert!(
        versions.get(&2).copied().unwrap_or(0) > 0,
        "the new model was picked up: {versions:?}"
    );
    assert!(alerts > 0, "fraud in the stream raises alerts");

    let alert_messages = drain(
        &kafka,
        &t.alerts,
        alerts,
        Duration::from_secs(3),
        Duration::from_secs(30),
    );
    assert_eq!(
        alert_messages.len(),
        alerts,
        "every alerting prediction is on the alerts topic, once"
    );

    let dead = drain(
        &kafka,
        &t.dlq,
        20,
        Duration::from_secs(3),
        Duration::from_secs(30),
    );
    assert_eq!(dead.len(), 20, "every malformed record is in the DLQ, once");
    for m in &dead {
        let headers = headers_map(m);
        assert_eq!(headers["source.topic"], t.transactions);
        assert!(headers["error"].contains("magic byte"), "{headers:?}");
        assert!(
            headers["source.offset"].parse::<i64>().is_ok()
                && headers["source.partition"].parse::<i32>().is_ok()
        );
        assert_eq!(m.payload().unwrap(), b"not avro at all");
    }

    // The survivors stop cleanly on SIGTERM.
    for s in scorers.iter_mut().skip(1) {
        Command::new("kill")
            .args(["-TERM", &s.id().to_string()])
            .status()
            .unwrap();
        assert!(s.wait().unwrap().success(), "a scorer exits 0 on SIGTERM");
    }
}

/// An instance that takes over partitions rebuilds their per-account state from the input topic.
/// The model here is trained to read the account's history (its label is "this account was seen
/// in the window"), so a lost or wrong state shows in the scores: after a restart mid-stream,
/// every prediction must equal what an uninterrupted scorer computes, and some of those after the
/// restart must differ from what a scorer that lost its state would compute.
#[tokio::test(flavor = "multi_thread")]
async fn account_state_survives_a_restart() {
    let kafka = local_kafka();
    let t = Topics::create(&kafka, "state", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let (csv, rows) = simulate(dir.path(), 60_000, 11);
    let record = model_record(1, &train(&csv, |_, a| a.count_window > 0.0), 0.5);
    let codec = Codec::new(&kafka.schema_registry);
    let raw: FutureProducer = kafka.client_config().unwrap().create().unwrap();
    send_raw(
        &raw,
        &t.models,
        "paysim",
        &codec.encode(&t.models, &record).await.unwrap(),
    )
    .await;
    let status = publish(&kafka, &csv, &t)
        .args(["--partitions", "2", "--id-prefix", "st"])
        .status()
        .unwrap();
    assert!(status.success(), "every transaction was acknowledged");
    let n = rows as usize;

    // The first instance scores part of the stream and stops cleanly (committing its offsets);
    // the second starts from those offsets. (A partition may be read to its end before the other
    // is started: the check below that the test can fail covers that.)
    let first = scorer_command(&kafka, &t, &unique_name("first"))
        .args(["--max-batch", "500", "--stop-after", "40000"])
        .status()
        .unwrap();
    assert!(first.success(), "the first instance stops cleanly");
    let group: BaseConsumer = kafka
        .client_config_with(&[("group.id", &t.group)])
        .unwrap()
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(&t.transactions, 0);
    tpl.add_partition(&t.transactions, 1);
    let committed: HashMap<i32, i64> = group
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => (e.partition(), o),
            _ => (e.partition(), 0), // nothing committed: the second starts at the beginning
        })
        .collect();
    drop(group);
    let mut second = scorer(&kafka, &t, &unique_name("second"));
    let predictions = tokio::task::spawn_blocking({
        let (kafka, topic) = (kafka.clone(), t.predictions.clone());
        move || {
            drain(
                &kafka,
                &topic,
                n,
                Duration::from_secs(3),
                Duration::from_secs(120),
            )
        }
    })
    .await
    .unwrap();
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(second.wait().unwrap().success());

    // What an uninterrupted scorer computes, and what one that lost the state at the restart would,
    // from the input topic itself (each partition in offset order, as the scorer reads it).
    let mut input = drain(
        &kafka,
        &t.transactions,
        n,
        Duration::from_secs(1),
        Duration::from_secs(60),
    );
    input.sort_by_key(|m| (m.partition(), m.offset()));
    assert_eq!(input.len(), n);
    let (mut kept, mut lost) = (Vec::new(), Vec::new());
    let (mut ids, mut after_restart) = (Vec::new(), Vec::new());
    let mut histories: HashMap<i32, (AccountHistory, AccountHistory)> = HashMap::new();
    for m in &input {
        let tx: Transaction = codec.decode(m.payload().unwrap()).await.unwrap();
        let (full, cut) = histories.entry(m.partition()).or_default();
        let restarted = m.offset() >= committed[&m.partition()];
        if m.offset() == committed[&m.partition()] {
            *cut = AccountHistory::default();
        }
        let view = TxView::from(&tx);
        push_features(
            &view,
            full.observe(&tx.name_orig, m.offset(), tx.step, tx.amount),
            &mut kept,
        );
        push_features(
            &view,
            cut.observe(&tx.name_orig, m.offset(), tx.step, tx.amount),
            &mut lost,
        );
        ids.push(tx.transaction_id);
        after_restart.push(restarted);
    }
    let model = LoadedModel::from_record(&record).unwrap();
    let (want, if_lost) = (model.predict(&kept).unwrap(), model.predict(&lost).unwrap());
    let sensitive = (0..n)
        .filter(|&i| after_restart[i] && want[i] != if_lost[i])
        .count();
    assert!(
        sensitive >= 20,
        "the test must be able to fail: only {sensitive} predictions after the restart depend on \
         state from before it"
    );

    let mut got: HashMap<String, f64> = HashMap::new();
    for m in &predictions {
        let p: Prediction = codec.decode(m.payload().unwrap()).await.unwrap();
        assert!(
            got.insert(p.transaction_id.clone(), p.score).is_none(),
            "duplicate prediction for {}",
            p.transaction_id
        );
    }
    assert_eq!(got.len(), n, "one prediction per transaction");
    let wrong: Vec<_> = (0..n)
        .filter(|&i| got.get(&ids[i]) != Some(&want[i]))
        .map(|i| {
            (
                &ids[i],
                got.get(&ids[i]),
                want[i],
                if_lost[i],
                after_restart[i],
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {n} predictions differ from an uninterrupted scorer's ({sensitive} depend on state \
         from before the restart); first (id, got, want, if state were lost, after restart): {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// The `traceparent` header of each message that has one, by transaction id.
async fn traceparents<T: fraudstream_schemas::AvroRecord>(
    codec: &Codec,
    messages: &[OwnedMessage],
    id: impl Fn(T) -> String,
) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for m in messages {
        if let Some(tp) = headers_map(m).remove("traceparent") {
            let record = codec.decode(m.payload().unwrap()).await.unwrap();
            found.insert(id(record), tp);
        }
    }
    found
}

/// With traces exported, one transaction in `--trace-every` carries a `traceparent` from the
/// producer, and its prediction carries the scorer's span of the same trace: a trace does not
/// stop at the topic.
#[tokio::test(flavor = "multi_thread")]
async fn a_sampled_transaction_keeps_its_trace_through_the_scorer() {
    let kafka = local_kafka();
    let t = Topics::create(&kafka, "trace", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let (csv, rows) = simulate(dir.path(), 5_000, 3);
    let codec = Codec::new(&kafka.schema_registry);
    let raw: FutureProducer = kafka.client_config().unwrap().create().unwrap();
    let model = model_record(1, &train(&csv, |fraud, _| fraud), 0.5);
    let record = codec.encode(&t.models, &model).await.unwrap();
    send_raw(&raw, &t.models, "paysim", &record).await;
    let endpoint = otlp_sink();
    let status = publish(&kafka, &csv, &t)
        .args(["--trace-every", "100"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .status()
        .unwrap();
    assert!(status.success());
    let scored = scorer_command(&kafka, &t, &unique_name("traced"))
        .args(["--stop-after", &rows.to_string()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        // Spans are info-level: a filter that drops them drops the trace too.
        .env("RUST_LOG", "warn,scorer=info")
        .status()
        .unwrap();
    assert!(scored.success());

    let n = rows as usize;
    let (short, long) = (Duration::from_secs(1), Duration::from_secs(60));
    let input = drain(&kafka, &t.transactions, n, short, long);
    let output = drain(&kafka, &t.predictions, n, short, long);
    let sent = traceparents(&codec, &input, |t: Transaction| t.transaction_id).await;
    let scored = traceparents(&codec, &output, |p: Prediction| p.transaction_id).await;
    assert_eq!(sent.len(), n.div_ceil(100), "one in 100 is traced");
    assert!(
        sent.keys().eq(scored.keys()),
        "exactly the traced transactions' predictions are traced"
    );
    for (id, upstream) in &sent {
        let (up, down): (Vec<&str>, Vec<&str>) = (
            upstream.split('-').collect(),
            scored[id].split('-').collect(),
        );
        assert_eq!(
            up[1], down[1],
            "{id}: the prediction continues the producer's trace"
        );
        assert_ne!(up[2], down[2], "{id}: under a span of the scorer's own");
    }
}
