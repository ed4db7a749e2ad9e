//! What the scorer's tests share: fresh topics, small models, the producer and the scorer as
//! processes, and reading a topic back.

pub(crate) use fraudstream_common::features::{
    push_features, AccountFeatures, AccountHistory, TxView, N_FEATURES,
};
pub(crate) use fraudstream_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
pub(crate) use fraudstream_common::model::{pack_model_text, LoadedModel};
pub(crate) use fraudstream_common::testing::{
    headers_map, local_kafka, otlp_sink, service_args, terminate_and_wait, unique_name,
    workspace_bin, Process,
};
pub(crate) use fraudstream_schemas::{Codec, ModelRecord, Prediction, Transaction};
pub(crate) use paysim::CsvReader;
pub(crate) use rdkafka::consumer::{BaseConsumer, Consumer};
pub(crate) use rdkafka::message::OwnedMessage;
pub(crate) use rdkafka::producer::{FutureProducer, FutureRecord};
pub(crate) use rdkafka::Message;
pub(crate) use std::collections::{BTreeMap, HashMap, HashSet};
pub(crate) use std::path::Path;
pub(crate) use std::process::Command;
pub(crate) use std::time::{Duration, Instant};
/// A small LightGBM model trained on `csv` with the shared feature code, to predict `label`.
pub(crate) fn train(csv: &Path, label: impl Fn(bool, &AccountFeatures) -> bool) -> String {
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

pub(crate) fn model_record(version: i32, text: &str, threshold: f64) -> ModelRecord {
    let (compression, model_text) = pack_model_text(text);
    ModelRecord {
        version,
        compression,
        model_text,
        ..scorer::bootstrap_record("paysim", String::new(), threshold)
    }
}

pub(crate) struct Topics {
    pub(crate) transactions: String,
    pub(crate) labels: String,
    pub(crate) predictions: String,
    pub(crate) alerts: String,
    pub(crate) dlq: String,
    pub(crate) models: String,
    pub(crate) rules: String,
    pub(crate) group: String,
}

impl Topics {
    /// Fresh names, with the transactions topic (`partitions`) and the compacted models topic
    /// created (the scorer creates the others).
    pub(crate) async fn create(kafka: &KafkaArgs, tag: &str, partitions: i32) -> Self {
        let name = |what: &str| unique_name(&format!("{tag}_{what}"));
        let t = Topics {
            transactions: name("tx"),
            labels: name("labels"),
            predictions: name("predictions"),
            alerts: name("alerts"),
            dlq: name("dlq"),
            models: name("models"),
            rules: name("rules"),
            group: name("group"),
        };
        ensure_topics(
            &kafka.admin().unwrap(),
            &[
                TopicSpec::new(&t.transactions, partitions),
                TopicSpec::new(&t.models, 1).compacted(),
            ],
        )
        .await
        .unwrap();
        t
    }
}

/// `rows` simulated PaySim rows in `dir/paysim.csv`, and how many were written.
pub(crate) fn simulate(dir: &Path, rows: u64, seed: u64) -> (std::path::PathBuf, u64) {
    let csv = dir.join("paysim.csv");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
    let summary = paysim::simulate::simulate(rows, seed, &mut w, |_| {}).unwrap();
    std::io::Write::flush(&mut w).unwrap();
    (csv, summary.rows)
}

/// `producer publish` of `csv` to the test's topics, labels at once; add flags and run it.
pub(crate) fn publish(kafka: &KafkaArgs, csv: &Path, t: &Topics) -> Command {
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

pub(crate) fn scorer(kafka: &KafkaArgs, t: &Topics, instance: &str) -> Process {
    scorer_command(kafka, t, instance).spawn().unwrap().into()
}

pub(crate) fn scorer_command(kafka: &KafkaArgs, t: &Topics, instance: &str) -> Command {
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
            "--rules-topic",
            &t.rules,
        ])
        .args(["--commit-interval-ms", "100"])
        .env("RUST_LOG", "warn");
    command
}

/// [`drain`] on a blocking thread, so that the test's runtime (and what it spawned) runs on.
pub(crate) async fn drain_blocking(
    kafka: &KafkaArgs,
    topic: &str,
    expected: usize,
    quiet: Duration,
    deadline: Duration,
) -> Vec<OwnedMessage> {
    let (kafka, topic) = (kafka.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || drain(&kafka, &topic, expected, quiet, deadline))
        .await
        .unwrap()
}

/// Reads a topic (read_committed) until it has been quiet for `quiet` after `expected` arrived.
pub(crate) fn drain(
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

/// A stream scored in part, for a second instance to go on with: `rows` simulated transactions
/// on `partitions` partitions, a model that reads the account's history (its label is "this
/// account was seen in the window", so a lost state shows in the scores), and a first instance
/// that scored `first` of them and stopped cleanly, committing its offsets.
pub(crate) struct ScoredInPart {
    pub(crate) t: Topics,
    pub(crate) codec: Codec,
    pub(crate) record: ModelRecord,
    pub(crate) rows: u64,
    /// The first instance's committed offset per partition (0: none).
    pub(crate) committed: HashMap<i32, i64>,
}

pub(crate) async fn scored_in_part(
    kafka: &KafkaArgs,
    tag: &str,
    partitions: i32,
    rows: u64,
    first: u64,
) -> ScoredInPart {
    let t = Topics::create(kafka, tag, partitions).await;
    let dir = tempfile::tempdir().unwrap();
    let (csv, rows) = simulate(dir.path(), rows, 11);
    let record = model_record(1, &train(&csv, |_, a| a.count_window > 0.0), 0.5);
    let codec = publish_model(kafka, &t, &record).await;
    let status = publish(kafka, &csv, &t)
        .args(["--partitions", &partitions.to_string(), "--id-prefix", tag])
        .status()
        .unwrap();
    assert!(status.success(), "every transaction was acknowledged");
    let status = scorer_command(kafka, &t, &unique_name("first"))
        .args(["--max-batch", "500", "--stop-after", &first.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "the first instance stops cleanly");
    let committed = committed_offsets(kafka, &t, partitions);
    ScoredInPart {
        t,
        codec,
        record,
        rows,
        committed,
    }
}

/// Publishes `record` on the test's models topic; the codec, to decode what the scorer writes.
pub(crate) async fn publish_model(kafka: &KafkaArgs, t: &Topics, record: &ModelRecord) -> Codec {
    let codec = Codec::new(&kafka.schema_registry);
    let raw: FutureProducer = kafka.client_config().unwrap().create().unwrap();
    let payload = codec.encode(&t.models, record).await.unwrap();
    send_raw(&raw, &t.models, "paysim", &payload).await;
    codec
}

/// The group's committed offset of each of the transactions topic's `partitions` (0: none).
pub(crate) fn committed_offsets(
    kafka: &KafkaArgs,
    t: &Topics,
    partitions: i32,
) -> HashMap<i32, i64> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(&t.transactions, p);
    }
    group_client(kafka, t)
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => (e.partition(), o),
            _ => (e.partition(), 0),
        })
        .collect()
}

/// A client of the scorers' group that is not a member of it (it never subscribes).
pub(crate) fn group_client(kafka: &KafkaArgs, t: &Topics) -> BaseConsumer {
    kafka
        .client_config_with(&[("group.id", &t.group)])
        .unwrap()
        .create()
        .unwrap()
}

/// The transaction ids of `messages` (predictions), each asserted to come once.
pub(crate) async fn distinct_prediction_ids(
    codec: &Codec,
    messages: &[OwnedMessage],
) -> HashSet<String> {
    let mut ids = HashSet::new();
    for m in messages {
        let p: Prediction = codec.decode(m.payload().unwrap()).await.unwrap();
        assert!(
            ids.insert(p.transaction_id.clone()),
            "duplicate prediction for {}",
            p.transaction_id
        );
    }
    ids
}

pub(crate) async fn send_raw(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}
