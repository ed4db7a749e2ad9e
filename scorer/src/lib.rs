//! The scorer: the heart of fraudstream. Instances share `transactions` through a consumer group;
//! each computes features (shared code, same as the trainer), scores with the LightGBM champion
//! (and a challenger in shadow), and writes one `Prediction` per transaction plus an alert with
//! its top reasons when the score reaches the threshold.
//!
//! Delivery: exactly-once. Outputs (predictions, alerts, dead letters) and the input offsets are
//! committed in one Kafka transaction (read-process-write). Before partitions are taken away in
//! a rebalance the open transaction is committed; if a commit fails it is aborted and the consumer
//! rewinds to the committed offsets, so the work is redone and each transaction ends up with
//! exactly one committed prediction.
//!
//! Per-account state (count/sum over the window, steps since last) is rebuilt on assignment by
//! re-reading the partition's recent input (`state_lookback` records before the first offset to
//! score). Because the Kafka key is the origin account, a partition holds all of its accounts'
//! history, and the state is exact as long as the lookback covers the window. This keeps the hot
//! path free of changelog writes; the cost is a bounded re-read after a rebalance or restart.

pub mod metrics;
pub mod models;

use fraudstream_common::features::{push_features, AccountHistory, TxView, N_FEATURES};
use fraudstream_common::kafka::{
    dead_letter_headers, drain, ensure_topics, read_partition_range, KafkaArgs, TopicSpec,
    BULK_FETCH,
};
use fraudstream_common::model::LoadedModel;
use fraudstream_common::server::Health;
use fraudstream_common::{now_millis, CommonError};
use fraudstream_schemas::{Codec, ModelRecord, ModelStatus, Prediction, SchemaError, Transaction};
use metrics::ScorerMetrics;
use models::{ModelEvent, ModelSet};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Errors that stop the scorer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScorerError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Common(#[from] CommonError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("bootstrap model {path}: {detail}")]
    Bootstrap { path: String, detail: String },
    #[error("scoring failed: {0}")]
    Scoring(String),
    #[error("the Kafka transaction could not be committed or aborted: {0} (the instance stops; a restart resumes from the last commit)")]
    Transaction(String),
}

/// Everything the scorer needs to run. Built by `main` from flags and env.
#[derive(Debug, Clone)]
pub struct ScorerConfig {
    pub kafka: KafkaArgs,
    pub group: String,
    /// Stable per instance: a restarted instance fences its predecessor's open transaction.
    pub transactional_id: String,
    pub input_topic: String,
    pub predictions_topic: String,
    pub alerts_topic: String,
    pub dlq_topic: String,
    pub models_topic: String,
    pub model_name: String,
    /// A LightGBM text model to serve until the models topic has a champion.
    pub bootstrap_model: Option<PathBuf>,
    pub bootstrap_threshold: f64,
    /// How long a Kafka transaction stays open: longer = more throughput, more latency.
    pub commit_interval: Duration,
    pub max_batch: usize,
    /// Records per partition re-read to rebuild account state after assignment.
    pub state_lookback: i64,
    /// Partitions of topics this scorer creates if missing (outputs, DLQ).
    pub partitions: i32,
    /// Benchmark baseline: forward each record's bytes to the predictions topic in the same
    /// transactional loop, without decoding or scoring.
    pub passthrough: bool,
    /// Stop (cleanly) after this many records; for benchmarks.
    pub stop_after: Option<u64>,
}

/// Counts of one run (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub records: u64,
    pub predictions: u64,
    pub alerts: u64,
    pub dead_letters: u64,
    /// From the first record polled to the last commit.
    pub busy: Duration,
}

impl RunSummary {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

/// The open Kafka transaction, shared with the rebalance callback.
struct Txn {
    producer: BaseProducer,
    open: bool,
    /// Next offset to commit per input partition.
    offsets: HashMap<i32, i64>,
    opened_at: Instant,
}

impl Txn {
    fn begin(&mut self) -> Result<(), ScorerError> {
        if !self.open {
            self.producer.begin_transaction()?;
            self.open = true;
            self.opened_at = Instant::now();
        }
        Ok(())
    }

    /// Commits outputs and offsets together. On failure the transaction is aborted and the
    /// partitions whose offsets were not committed are returned, to be rewound.
    fn commit(
        &mut self,
        topic: &str,
        consumer: &BaseConsumer<ScorerContext>,
        metrics: &ScorerMetrics,
    ) -> Result<Vec<i32>, ScorerError> {
        if !self.open {
            return Ok(Vec::new());
        }
        let _span = tracing::info_span!("kafka_commit", partitions = self.offsets.len()).entered();
        self.open = false;
        let offsets = std::mem::take(&mut self.offsets);
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &offsets {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
        }
        let timeout = Duration::from_secs(30);
        let result = match consumer.group_metadata() {
            Some(gm) => {
                let started = Instant::now();
                drain(&self.producer, timeout);
                let sent = if offsets.is_empty() {
                    Ok(())
                } else {
                    self.producer
                        .send_offsets_to_transaction(&tpl, &gm, timeout)
                };
                metrics
                    .offsets_seconds
                    .observe(started.elapsed().as_secs_f64());
                let started = Instant::now();
                let committed = sent.and_then(|_| self.producer.commit_transaction(timeout));
                metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                committed.map_err(|e| e.to_string())
            }
            None => Err("the consumer has no group metadata".to_string()),
        };
        match result {
            Ok(()) => {
                metrics.txn_committed.inc();
                Ok(Vec::new())
            }
            Err(e) => {
                tracing::warn!(error = %e, "commit failed; aborting the transaction and redoing its work");
                self.producer.abort_transaction(timeout).map_err(|abort| {
                    ScorerError::Transaction(format!("commit: {e}; abort: {abort}"))
                })?;
                metrics.txn_aborted.inc();
                Ok(offsets.into_keys().collect())
            }
        }
    }
}

/// Consumer callbacks: commit the open transaction before partitions are revoked.
struct ScorerContext {
    txn: Arc<Mutex<Txn>>,
    topic: String,
    metrics: Arc<ScorerMetrics>,
    fatal: Arc<Mutex<Option<String>>>,
    /// Bumped on every assignment: records polled before it are dropped (see the poll loop).
    generation: Arc<AtomicU64>,
}

impl ClientContext for ScorerContext {}
impl ConsumerContext for ScorerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::info!(
                partitions = tpl.count(),
                "partitions revoked; committing the open transaction first"
            );
            let mut txn = self.txn.lock().unwrap();
            // After an abort here nothing needs rewinding: the partitions go back to the group and
            // whoever gets them starts at the committed offsets.
            if let Err(e) = txn.commit(&self.topic, consumer, &self.metrics) {
                *self.fatal.lock().unwrap() = Some(e.to_string());
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?parts, "partitions assigned");
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Starts the scorer and runs until `stop` is set (then commits and returns) or a fatal error.
pub async fn run(
    cfg: ScorerConfig,
    metrics: Arc<ScorerMetrics>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, ScorerError> {
    ensure_topics(
        &cfg.kafka.admin()?,
        &[
            // The input too: a subscription to a missing topic idles until a metadata refresh.
            TopicSpec::new(&cfg.input_topic, cfg.partitions),
            TopicSpec::new(&cfg.predictions_topic, cfg.partitions),
            TopicSpec::new(&cfg.alerts_topic, cfg.partitions),
            TopicSpec::new(&cfg.dlq_topic, cfg.partitions),
            TopicSpec::new(&cfg.models_topic, 1).compacted(),
        ],
        1,
    )
    .await?;
    let codec = Arc::new(Codec::new(&cfg.kafka.schema_registry));
    let prediction_schema = codec
        .schema_id::<Prediction>(&cfg.predictions_topic)
        .await?;
    let alert_schema = codec.schema_id::<Prediction>(&cfg.alerts_topic).await?;
    let bootstrap = match &cfg.bootstrap_model {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|e| ScorerError::Bootstrap {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?,
        ),
        None => None,
    };
    let (events_tx, events) = std::sync::mpsc::channel();
    let watcher = models::spawn_watcher(
        &cfg.kafka,
        &cfg.models_topic,
        codec.clone(),
        tokio::runtime::Handle::current(),
        events_tx,
        stop.clone(),
    )?;
    let runtime = tokio::runtime::Handle::current();
    let engine = Engine {
        cfg,
        codec,
        runtime,
        metrics,
        health,
        stop,
        prediction_schema,
        alert_schema,
    };
    let summary = tokio::task::spawn_blocking(move || engine.run(events, bootstrap))
        .await
        .map_err(|e| ScorerError::Scoring(format!("scoring thread panicked: {e}")))?;
    let _ = watcher.join();
    summary
}

struct Engine {
    cfg: ScorerConfig,
    codec: Arc<Codec>,
    runtime: tokio::runtime::Handle,
    metrics: Arc<ScorerMetrics>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    prediction_schema: u32,
    alert_schema: u32,
}

/// Producer settings; `-X` overrides any of them.
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("linger.ms", "5"),
    ("batch.size", "1000000"),
    ("compression.type", "lz4"),
    ("queue.buffering.max.messages", "1000000"),
    // A killed instance's open transaction blocks read_committed readers until it times out
    // (unless the instance comes back with the same transactional.id): keep that short.
    ("transaction.timeout.ms", "10000"),
];

const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("isolation.level", "read_committed"),
    ("auto.offset.reset", "earliest"),
    ("fetch.min.bytes", "1"),
    ("fetch.wait.max.ms", "50"),
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "1000"),
    ("partition.assignment.strategy", "range,roundrobin"),
];

fn send<K: rdkafka::message::ToBytes + ?Sized>(
    producer: &BaseProducer,
    mut record: BaseRecord<'_, K, [u8]>,
) -> Result<(), ScorerError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

impl Engine {
    fn decode(&self, payload: &[u8]) -> Result<Transaction, SchemaError> {
        match self.codec.decode_cached(payload) {
            Some(r) => r,
            None => self.runtime.block_on(self.codec.decode(payload)),
        }
    }

    /// Waits until the models topic was read to its end and a champion is known.
    fn initial_models(
        &self,
        events: &Receiver<ModelEvent>,
        bootstrap: Option<String>,
    ) -> Result<ModelSet, ScorerError> {
        let mut set = ModelSet::default();
        if let Some(text) = bootstrap {
            let record = bootstrap_record(&self.cfg.model_name, text, self.cfg.bootstrap_threshold);
            let model = LoadedModel::from_record(&record).map_err(|e| ScorerError::Bootstrap {
                path: self
                    .cfg
                    .bootstrap_model
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                detail: e.to_string(),
            })?;
            set.champion = Some(model);
        }
        self.health.set_unready("reading the models topic");
        let mut caught_up = false;
        while !self.stop.load(Ordering::Relaxed) {
            match events.recv_timeout(Duration::from_millis(200)) {
                Ok(ModelEvent::CaughtUp) => {
                    caught_up = true;
                    if set.champion.is_none() {
                        tracing::warn!(topic = %self.cfg.models_topic, "no champion model yet: waiting for one (or start with --model FILE)");
                        self.health.set_unready("waiting for a champion model");
                    }
                }
                Ok(ModelEvent::Record(r)) => set.apply(&r, &self.cfg.model_name, &self.metrics),
                Ok(ModelEvent::Undecodable(e)) => set.refuse(e, &self.metrics),
                Err(_) => {}
            }
            if caught_up && set.champion.is_some() {
                break;
            }
        }
        Ok(set)
    }

    /// Re-reads up to `state_lookback` records of `partition` before `up_to` into a history.
    fn rebuild_state(&self, partition: i32, up_to: i64) -> Result<AccountHistory, ScorerError> {
        let mut history = AccountHistory::default();
        let topic = &self.cfg.input_topic;
        let reader: BaseConsumer = self
            .cfg
            .kafka
            .client_config_with(&[
                ("group.id", "scorer-state-rebuild"),
                ("enable.auto.commit", "false"),
                // The range ends at a record boundary we know: do not sit in a 500 ms long poll.
                ("fetch.wait.max.ms", "10"),
                ("isolation.level", "read_committed"),
            ])?
            .create()?;
        let (low, _) = reader.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        let from = (up_to - self.cfg.state_lookback).max(low);
        let started = Instant::now();
        let mut n = 0u64;
        read_partition_range(
            &reader,
            topic,
            partition,
            from,
            up_to,
            Duration::from_secs(60),
            |m| {
                if let Some(Ok(tx)) = m.payload().map(|p| self.decode(p)) {
                    history.observe(&tx.name_orig, m.offset(), tx.step, tx.amount);
                    n += 1;
                }
            },
        )?;
        self.metrics
            .state_rebuilds
            .with_label_values(&[&partition.to_string()])
            .inc_by(n);
        tracing::info!(
            partition,
            records = n,
            from,
            up_to,
            ms = started.elapsed().as_millis() as u64,
            "account state rebuilt"
        );
        Ok(history)
    }

    fn run(
        self,
        events: Receiver<ModelEvent>,
        bootstrap: Option<String>,
    ) -> Result<RunSummary, ScorerError> {
        let mut models = self.initial_models(&events, bootstrap)?;
        let mut summary = RunSummary::default();
        if self.stop.load(Ordering::Relaxed) {
            return Ok(summary);
        }
        let producer: BaseProducer = self
            .cfg
            .kafka
            .client_config_with(PRODUCER_DEFAULTS)?
            .set("transactional.id", &self.cfg.transactional_id)
            .create()?;
        producer.init_transactions(Duration::from_secs(30))?;
        let txn = Arc::new(Mutex::new(Txn {
            producer,
            open: false,
            offsets: HashMap::new(),
            opened_at: Instant::now(),
        }));
        let fatal = Arc::new(Mutex::new(None));
        let generation = Arc::new(AtomicU64::new(0));
        let consumer: BaseConsumer<ScorerContext> = self
            .cfg
            .kafka
            .client_config_with(&[CONSUMER_DEFAULTS, BULK_FETCH].concat())?
            .set("group.id", &self.cfg.group)
            .create_with_context(ScorerContext {
                txn: txn.clone(),
                topic: self.cfg.input_topic.clone(),
                metrics: self.metrics.clone(),
                fatal: fatal.clone(),
                generation: generation.clone(),
            })?;
        // Declared after the consumer, so dropped before it: see `AbortOnExit`.
        let _abort_on_exit = AbortOnExit(txn.clone());
        consumer.subscribe(&[&self.cfg.input_topic])?;
        self.health.set_ready(format!(
            "scoring with {} v{}",
            self.cfg.model_name,
            models.champion.as_ref().map_or(0, |m| m.version)
        ));

        let mut histories: HashMap<i32, AccountHistory> = HashMap::new();
        let mut last_lag = Instant::now();
        let mut last_evict = Instant::now();
        let mut rows: Vec<f64> = Vec::with_capacity(self.cfg.max_batch * N_FEATURES);
        let mut batch: Vec<(i32, i64, Transaction)> = Vec::with_capacity(self.cfg.max_batch);
        let mut first_record: Option<Instant> = None;
        let stop_after = self.cfg.stop_after.unwrap_or(u64::MAX);
        while !self.stop.load(Ordering::Relaxed) && summary.records < stop_after {
            // New models are swapped in between batches: scoring never waits for a load.
            loop {
                match events.try_recv() {
                    Ok(ModelEvent::Record(r)) => {
                        models.apply(&r, &self.cfg.model_name, &self.metrics)
                    }
                    Ok(ModelEvent::Undecodable(e)) => models.refuse(e, &self.metrics),
                    Ok(ModelEvent::CaughtUp) => {}
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            }
            let champion = models
                .champion
                .as_ref()
                .expect("a champion is loaded before scoring starts");

            // Poll a batch: wait for the first record, then take what is already there.
            let mut polled: Vec<BorrowedMessage<'_>> = Vec::new();
            let mut timeout = Duration::from_millis(50);
            while polled.len() < self.cfg.max_batch {
                let before = generation.load(Ordering::Acquire);
                let next = consumer.poll(timeout);
                if generation.load(Ordering::Acquire) != before {
                    // A rebalance ran inside this poll: the open transaction was committed without
                    // the records polled so far, and the new assignment fetches from the committed
                    // offsets, so those records come again. Scoring them now would duplicate them.
                    polled.clear();
                    histories.clear();
                }
                match next {
                    Some(Ok(m)) => polled.push(m),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error");
                        break;
                    }
                    None => break,
                }
                timeout = Duration::ZERO;
            }
            if let Some(e) = fatal.lock().unwrap().take() {
                return Err(ScorerError::Transaction(e));
            }
            // Forget state of partitions that are no longer ours.
            let assigned: Vec<i32> = consumer
                .assignment()?
                .elements()
                .iter()
                .map(|e| e.partition())
                .collect();
            histories.retain(|p, _| assigned.contains(p));

            let mut txn_guard = txn.lock().unwrap();
            let t = &mut *txn_guard;
            if !polled.is_empty() && self.cfg.passthrough {
                t.begin()?;
                first_record.get_or_insert_with(Instant::now);
                for m in &polled {
                    summary.records += 1;
                    t.offsets.insert(m.partition(), m.offset() + 1);
                    let mut record = BaseRecord::<[u8], [u8]>::to(&self.cfg.predictions_topic);
                    if let Some(k) = m.key() {
                        record = record.key(k);
                    }
                    if let Some(p) = m.payload() {
                        record = record.payload(p);
                    }
                    send(&t.producer, record)?;
                }
                t.producer.poll(Duration::ZERO);
            } else if !polled.is_empty() {
                // One span per batch (exported over OTLP when configured): decode → features →
                // LightGBM → produce. Per record would cost more than the work it describes.
                let _span = tracing::info_span!("score_batch", records = polled.len()).entered();
                t.begin()?;
                first_record.get_or_insert_with(Instant::now);
                let started = Instant::now();
                rows.clear();
                batch.clear();
                for m in &polled {
                    self.metrics.records_in.inc();
                    summary.records += 1;
                    let (p, o) = (m.partition(), m.offset());
                    t.offsets.insert(p, o + 1);
                    let decoded = m
                        .payload()
                        .ok_or_else(|| {
                            "empty payload (tombstone) on the transactions topic".to_string()
                        })
                        .and_then(|pl| self.decode(pl).map_err(|e| e.to_string()));
                    match decoded {
                        Ok(tx) => {
                            if let std::collections::hash_map::Entry::Vacant(e) = histories.entry(p)
                            {
                                e.insert(self.rebuild_state(p, o)?);
                            }
                            let account = histories.get_mut(&p).unwrap().observe(
                                &tx.name_orig,
                                o,
                                tx.step,
                                tx.amount,
                            );
                            push_features(&TxView::from(&tx), account, &mut rows);
                            batch.push((p, o, tx));
                        }
                        Err(reason) => {
                            self.dead_letter(&t.producer, m, &reason)?;
                            summary.dead_letters += 1;
                        }
                    }
                }
                let scores = champion
                    .predict(&rows)
                    .map_err(|e| ScorerError::Scoring(e.to_string()))?;
                let shadow = match &models.challenger {
                    Some(c) => Some((
                        c.version,
                        c.predict(&rows)
                            .map_err(|e| ScorerError::Scoring(e.to_string()))?,
                    )),
                    None => None,
                };
                self.metrics.batch_size.observe(batch.len() as f64);
                self.metrics
                    .scoring_seconds
                    .observe(started.elapsed().as_secs_f64());
                // Reasons only for alerting rows, in one call.
                let alerting: Vec<usize> = (0..batch.len())
                    .filter(|i| scores[*i] >= champion.threshold)
                    .collect();
                let mut alert_rows = Vec::with_capacity(alerting.len() * N_FEATURES);
                for i in &alerting {
                    alert_rows.extend_from_slice(&rows[i * N_FEATURES..(i + 1) * N_FEATURES]);
                }
                let mut reasons = champion
                    .top_reasons(&alert_rows, 3)
                    .map_err(|e| ScorerError::Scoring(e.to_string()))?
                    .into_iter();
                let scored_at = now_millis();
                for (i, (_, _, tx)) in batch.iter().enumerate() {
                    let score = scores[i];
                    let is_alert = score >= champion.threshold;
                    let top_reasons = if is_alert {
                        reasons.next().unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    let prediction = Prediction {
                        transaction_id: tx.transaction_id.clone(),
                        name_orig: tx.name_orig.clone(),
                        tx_type: tx.tx_type,
                        amount: tx.amount,
                        event_time: tx.event_time,
                        scored_at,
                        score,
                        is_alert,
                        threshold: champion.threshold,
                        model_name: champion.name.clone(),
                        model_version: champion.version,
                        challenger_score: shadow.as_ref().map(|(_, s)| s[i]),
                        challenger_version: shadow.as_ref().map(|(v, _)| *v),
                        top_reasons,
                    };
                    let payload = Codec::encode_with_id(self.prediction_schema, &prediction)?;
                    send(
                        &t.producer,
                        BaseRecord::to(&self.cfg.predictions_topic)
                            .key(tx.name_orig.as_str())
                            .payload(&payload[..]),
                    )?;
                    summary.predictions += 1;
                    self.metrics.predictions_out.inc();
                    if is_alert {
                        let payload = Codec::encode_with_id(self.alert_schema, &prediction)?;
                        send(
                            &t.producer,
                            BaseRecord::to(&self.cfg.alerts_topic)
                                .key(tx.name_orig.as_str())
                                .payload(&payload[..]),
                        )?;
                        summary.alerts += 1;
                        self.metrics.alerts.inc();
                    }
                    self.metrics
                        .end_to_end_seconds
                        .observe((now_millis() - tx.event_time).max(0) as f64 / 1000.0);
                }
                t.producer.poll(Duration::ZERO);
            }
            if t.open && t.opened_at.elapsed() >= self.cfg.commit_interval {
                let rewind = t.commit(&self.cfg.input_topic, &consumer, &self.metrics)?;
                drop(txn_guard);
                self.rewind(&consumer, &rewind)?;
            } else {
                drop(txn_guard);
            }
            if last_lag.elapsed() >= Duration::from_secs(5) {
                last_lag = Instant::now();
                self.report_lag(&consumer);
            }
            if last_evict.elapsed() >= Duration::from_secs(30) {
                last_evict = Instant::now();
                for h in histories.values_mut() {
                    if let Some(step) = h.latest_step() {
                        h.evict_expired(step);
                    }
                }
            }
        }
        // Clean shutdown: commit what was scored, leave the group.
        let rewind = txn
            .lock()
            .unwrap()
            .commit(&self.cfg.input_topic, &consumer, &self.metrics)?;
        summary.busy = first_record.map(|f| f.elapsed()).unwrap_or_default();
        if !rewind.is_empty() {
            tracing::warn!("the last transaction was aborted at shutdown; its records will be scored again by the group");
        }
        consumer.unsubscribe();
        // Also ends the model watcher when we stop on our own (--stop-after).
        self.stop.store(true, Ordering::Relaxed);
        tracing::info!(?summary, "scorer stopped");
        Ok(summary)
    }

    /// After an abort: go back to the committed offsets of the partitions we still own.
    fn rewind(
        &self,
        consumer: &BaseConsumer<ScorerContext>,
        partitions: &[i32],
    ) -> Result<(), ScorerError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let assigned = consumer.assignment()?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            if assigned.find_partition(&self.cfg.input_topic, *p).is_some() {
                tpl.add_partition(&self.cfg.input_topic, *p);
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        let mut seek = TopicPartitionList::new();
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            seek.add_partition_offset(&self.cfg.input_topic, e.partition(), offset)?;
        }
        tracing::info!(partitions = ?partitions, "rewinding to the committed offsets");
        consumer.seek_partitions(seek, Duration::from_secs(10))?;
        Ok(())
    }

    fn report_lag(&self, consumer: &BaseConsumer<ScorerContext>) {
        let Ok(position) = consumer.position() else {
            return;
        };
        for e in position.elements() {
            if let (Offset::Offset(pos), Ok((_, high))) = (
                e.offset(),
                consumer.fetch_watermarks(
                    &self.cfg.input_topic,
                    e.partition(),
                    Duration::from_secs(1),
                ),
            ) {
                self.metrics
                    .consumer_lag
                    .with_label_values(&[&e.partition().to_string()])
                    .set((high - pos).max(0));
            }
        }
    }

    /// Sends an undecodable record to the DLQ (inside the transaction) with the reason in headers.
    fn dead_letter(
        &self,
        producer: &BaseProducer,
        m: &BorrowedMessage<'_>,
        reason: &str,
    ) -> Result<(), ScorerError> {
        self.metrics.dlq.inc();
        tracing::warn!(
            partition = m.partition(),
            offset = m.offset(),
            reason,
            "undecodable record to the DLQ"
        );
        let headers = dead_letter_headers(reason, m.topic(), m.partition(), m.offset());
        let mut record = BaseRecord::<str, [u8]>::to(&self.cfg.dlq_topic).headers(headers);
        if let Some(k) = m.key() {
            record = record.key(std::str::from_utf8(k).unwrap_or(""));
        }
        if let Some(p) = m.payload() {
            record = record.payload(p);
        }
        send(producer, record)
    }
}

/// Aborts the open transaction when the scoring loop exits with an error.
///
/// Without it, dropping the consumer closes it, the close revokes the partitions, and the revoke
/// callback commits the open transaction, whose offsets may already cover the record that was
/// being processed when the error came: that record would be skipped for good (a real loss seen in
/// the broker-restart fault scenario). On a clean exit the transaction is already committed and
/// this does nothing.
struct AbortOnExit(Arc<Mutex<Txn>>);

impl Drop for AbortOnExit {
    fn drop(&mut self) {
        let mut txn = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if txn.open {
            txn.open = false;
            txn.offsets.clear();
            if let Err(e) = txn.producer.abort_transaction(Duration::from_secs(30)) {
                tracing::error!(error = %e, "aborting the open transaction on exit failed; it times out on the broker");
            }
        }
    }
}

/// A `ModelRecord` around a bootstrap model file (version 0, champion).
pub fn bootstrap_record(model_name: &str, text: String, threshold: f64) -> ModelRecord {
    ModelRecord {
        model_name: model_name.into(),
        version: 0,
        created_at: now_millis(),
        format: "lightgbm-text".into(),
        feature_names: fraudstream_common::features::feature_names(),
        threshold,
        metrics: HashMap::new(),
        training_window_start: 0,
        training_window_end: 0,
        compression: fraudstream_schemas::Compression::None,
        model_text: text.into_bytes(),
        status: ModelStatus::Champion,
    }
}
