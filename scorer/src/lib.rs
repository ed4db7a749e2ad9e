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
//! Two threads per instance: the Kafka thread polls, sends and commits; the scoring stage
//! (`stage.rs`) decodes, scores and encodes one batch while the Kafka thread polls the next and
//! sends the previous one. A transaction only ever holds the offsets of records whose outputs it
//! holds too, so the pipeline changes nothing about exactly-once.
//!
//! Per-account state (count/sum over the window, steps since last) is rebuilt on assignment by
//! re-reading the partition's recent input (`state_lookback` records before the first offset to
//! score). Because the Kafka key is the origin account, a partition holds all of its accounts'
//! history, and the state is exact as long as the lookback covers the window. This keeps the hot
//! path free of changelog writes; the cost is a bounded re-read after a rebalance or restart.

pub mod metrics;
pub mod models;
mod stage;

use fraudstream_common::features::AccountHistory;
use fraudstream_common::kafka::{
    dead_letter_headers, drain, ensure_topics, read_partition_range, send_retrying, KafkaArgs,
    TopicSpec, BULK_FETCH,
};
use fraudstream_common::model::LoadedModel;
use fraudstream_common::registry_wait::RegistryWait;
use fraudstream_common::server::Health;
use fraudstream_common::{now_millis, CommonError};
use fraudstream_schemas::{Codec, Prediction, SchemaError, Transaction};
use metrics::ScorerMetrics;
use models::{ModelEvent, ModelSet};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use stage::{Batch, Output, RawRecord, Scored};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
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
    #[error("stopped while the schema registry was unavailable ({0}); the records not yet scored are scored by the group once the registry answers")]
    StoppedInOutage(#[source] SchemaError),
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
    /// The producer's settings (with the transactional.id), to start a new one after fencing.
    config: rdkafka::ClientConfig,
    open: bool,
    /// Next offset to commit per input partition.
    offsets: HashMap<i32, i64>,
    opened_at: Instant,
}

impl Txn {
    /// A producer under our transactional.id, ready for transactions. Initialising fences any
    /// older producer with the same id and completes (aborts) its open transaction.
    fn new(config: rdkafka::ClientConfig) -> Result<Self, ScorerError> {
        let producer: BaseProducer = config.create()?;
        producer.init_transactions(Duration::from_secs(30))?;
        Ok(Txn {
            producer,
            config,
            open: false,
            offsets: HashMap::new(),
            opened_at: Instant::now(),
        })
    }

    fn begin(&mut self) -> Result<(), ScorerError> {
        if !self.open {
            self.producer.begin_transaction()?;
            self.open = true;
            self.opened_at = Instant::now();
        }
        Ok(())
    }

    /// Commits outputs and offsets together. On failure the transaction is aborted, and the result
    /// says whether it held offsets: then the consumer must go back to the committed ones.
    fn commit(
        &mut self,
        topic: &str,
        consumer: &BaseConsumer<ScorerContext>,
        metrics: &ScorerMetrics,
    ) -> Result<bool, ScorerError> {
        if !self.open {
            return Ok(false);
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
                Ok(false)
            }
            Err(e) => {
                tracing::warn!(error = %e, "commit failed; aborting the transaction and redoing its work");
                if let Err(abort) = self.producer.abort_transaction(timeout) {
                    // Fenced: a broker outage outlasted transaction.timeout.ms, so the coordinator
                    // aborted the transaction itself and bumped the producer epoch. The outputs are
                    // aborted either way; carry on with a new producer, from the committed offsets.
                    tracing::warn!(error = %abort, "the transaction could not be aborted; starting a new producer");
                    *self = Txn::new(self.config.clone()).map_err(|new| {
                        ScorerError::Transaction(format!(
                            "commit: {e}; abort: {abort}; new producer: {new}"
                        ))
                    })?;
                }
                metrics.txn_aborted.inc();
                Ok(!offsets.is_empty())
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
    /// Bumped on every revocation and assignment: records polled before are dropped.
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
            // Records polled before this point (in a batch being polled or scored) belong to the
            // partitions just given up: they must not be sent, even if the assignment that follows
            // (in a later poll) hands the same partitions back; they are polled again from the
            // offsets just committed.
            self.generation.fetch_add(1, Ordering::AcqRel);
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
    let codec = Arc::new(cfg.kafka.codec()?);
    // A registry that is down while the scorer starts delays the start; it is not an error.
    let registry = Arc::new(RegistryWait::new(
        metrics.registry_up.clone(),
        health.clone(),
        Duration::from_secs(5),
    ));
    let stopping = || stop.load(Ordering::Relaxed);
    let prediction_schema = registry
        .retry(stopping, || {
            codec.schema_id::<Prediction>(&cfg.predictions_topic)
        })
        .await?;
    let alert_schema = registry
        .retry(stopping, || {
            codec.schema_id::<Prediction>(&cfg.alerts_topic)
        })
        .await?;
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
        registry.clone(),
        tokio::runtime::Handle::current(),
        events_tx,
        stop.clone(),
    )?;
    let runtime = tokio::runtime::Handle::current();
    let engine = Engine {
        cfg,
        codec,
        registry,
        runtime,
        metrics,
        health,
        stop,
        prediction_schema,
        alert_schema,
    };
    let engine = Arc::new(engine);
    let summary = tokio::task::spawn_blocking(move || engine.run(events, bootstrap))
        .await
        .map_err(|e| ScorerError::Scoring(format!("scoring thread panicked: {e}")))?;
    let _ = watcher.join();
    summary
}

struct Engine {
    cfg: ScorerConfig,
    codec: Arc<Codec>,
    registry: Arc<RegistryWait>,
    runtime: tokio::runtime::Handle,
    metrics: Arc<ScorerMetrics>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    prediction_schema: u32,
    alert_schema: u32,
}

/// Batches handed to the scoring stage and not yet sent. With the stage about as fast as the
/// Kafka side, 4 let each side run on while the other is descheduled (measured against 2: 4 was
/// faster in 6 of 6 runs, ~10%; 6 was no faster). At a steady rate below capacity a poll takes
/// what is there, so the pipeline rarely holds more than one batch and latency does not grow.
const PIPELINE_DEPTH: usize = 4;

/// Producer settings; `-X` overrides any of them.
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("linger.ms", "5"),
    ("batch.size", "1000000"),
    ("compression.type", "lz4"),
    ("queue.buffering.max.messages", "1000000"),
    // A killed instance's open transaction blocks read_committed readers until it times out
    // (unless the instance comes back with the same transactional.id), so not Kafka's 60 s; but
    // it also bounds message.timeout.ms, and at 10 s a slow broker restart timed out messages
    // inside open transactions (seen in the broker-restart fault scenario).
    ("transaction.timeout.ms", "30000"),
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

impl Engine {
    /// Decodes a transaction. While the registry cannot answer, waits (this batch and those
    /// behind it) rather than calling the record bad: `Err(StoppedInOutage)` only when the
    /// scorer stops during an outage. `Ok(Err(_))` is the record's own fault: a dead letter.
    fn decode(&self, payload: &[u8]) -> Result<Result<Transaction, SchemaError>, ScorerError> {
        if let Some(r) = self.codec.decode_cached(payload) {
            return Ok(r);
        }
        match self.registry.retry_blocking(
            || self.stop.load(Ordering::Relaxed),
            || self.runtime.block_on(self.codec.decode(payload)),
        ) {
            Err(e) if e.is_registry_unavailable() => Err(ScorerError::StoppedInOutage(e)),
            r => Ok(r),
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
            set.report(&self.metrics);
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

    /// The consumer that reads account state back from the input topic. The stage keeps one for
    /// its lifetime: creating and destroying a client per partition cost ~110 ms each, and a
    /// fresh assignment of 6 partitions stalled scoring for most of a second.
    fn state_reader(&self) -> Result<BaseConsumer, ScorerError> {
        Ok(self.cfg.kafka.range_reader("scorer-state-rebuild")?)
    }

    /// Re-reads up to `state_lookback` records of `partition` before `up_to` into a history.
    fn rebuild_state(
        &self,
        reader: &BaseConsumer,
        partition: i32,
        up_to: i64,
    ) -> Result<AccountHistory, ScorerError> {
        let mut history = AccountHistory::default();
        let topic = &self.cfg.input_topic;
        let (low, _) = reader.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        let from = (up_to - self.cfg.state_lookback).max(low);
        let started = Instant::now();
        let mut n = 0u64;
        let mut outage = None;
        read_partition_range(
            reader,
            topic,
            partition,
            from,
            up_to,
            Duration::from_secs(60),
            |m| match m.payload().map(|p| self.decode(p)) {
                Some(Ok(Ok(tx))) => {
                    history.observe(&tx.name_orig, m.offset(), tx.step, tx.amount);
                    n += 1;
                }
                Some(Err(e)) => outage = Some(e),
                _ => {} // a dead letter when it was scored: no state
            },
        )?;
        if let Some(e) = outage {
            return Err(e);
        }
        // Kept for the next partition: stop it fetching this one in the background meanwhile.
        reader.unassign()?;
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
        self: Arc<Self>,
        events: Receiver<ModelEvent>,
        bootstrap: Option<String>,
    ) -> Result<RunSummary, ScorerError> {
        let mut summary = RunSummary::default();
        // The scoring stage loads the models first (the models topic read to its end), then
        // scores the batches this thread sends it.
        let (batches, stage_batches) = std::sync::mpsc::sync_channel::<Arc<Batch>>(PIPELINE_DEPTH);
        let (stage_scored, scored) = std::sync::mpsc::channel();
        let (stage_ready, ready) = std::sync::mpsc::channel();
        let (recycle, recycled) = std::sync::mpsc::channel();
        let engine = self.clone();
        let stage = std::thread::Builder::new()
            .name("scoring".into())
            .spawn(move || {
                stage::run(
                    engine,
                    events,
                    bootstrap,
                    stage_ready,
                    stage_batches,
                    stage_scored,
                    recycled,
                )
            })
            .map_err(|e| ScorerError::Scoring(format!("cannot start the scoring thread: {e}")))?;
        let result = match ready.recv() {
            Ok(Ok(model)) => {
                let mut pipeline = Pipeline {
                    batches,
                    scored,
                    recycle,
                    in_flight: VecDeque::new(),
                    spare: Vec::new(),
                };
                let result = self.run_kafka(&model, &mut pipeline, &mut summary);
                drop(pipeline); // the stage ends when its input closes
                result
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(()), // stopped before a champion was known
        };
        let _ = stage.join();
        result?;
        // Also ends the model watcher when we stop on our own (--stop-after).
        self.stop.store(true, Ordering::Relaxed);
        tracing::info!(?summary, "scorer stopped");
        Ok(summary)
    }

    /// The Kafka side: polls batches and hands them to the stage, sends what it scored inside the
    /// open transaction with the batch's offsets, and commits every `commit_interval`.
    ///
    /// Exactly-once with a batch in flight: a transaction only ever holds the offsets of records
    /// whose outputs it also holds (offsets are added when a scored batch is sent, not when it is
    /// polled). A rebalance (inside `poll`) or an aborted commit bumps the generation; batches
    /// polled before it are dropped when they come back, because their records are polled again
    /// from the committed offsets.
    fn run_kafka(
        &self,
        model: &str,
        pipeline: &mut Pipeline,
        summary: &mut RunSummary,
    ) -> Result<(), ScorerError> {
        let mut config = self.cfg.kafka.client_config_with(PRODUCER_DEFAULTS)?;
        config.set("transactional.id", &self.cfg.transactional_id);
        let txn = Arc::new(Mutex::new(Txn::new(config)?));
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
        self.health.set_ready(format!("scoring with {model}"));

        let mut last_lag = Instant::now();
        let mut first_record: Option<Instant> = None;
        let stop_after = self.cfg.stop_after.unwrap_or(u64::MAX);
        loop {
            let in_flight_records: u64 = pipeline
                .in_flight
                .iter()
                .map(|b| b.records.len() as u64)
                .sum();
            let stopping = self.stop.load(Ordering::Relaxed)
                || summary.records + in_flight_records >= stop_after;
            if let Some(e) = fatal.lock().unwrap().take() {
                return Err(ScorerError::Transaction(e));
            }
            // Send what the stage has scored; wait for it when the pipeline is full or draining.
            let mut waited = false;
            loop {
                let in_flight = &pipeline.in_flight;
                let must_wait =
                    in_flight.len() >= PIPELINE_DEPTH || (stopping && !in_flight.is_empty());
                let next = if must_wait && !waited {
                    waited = true;
                    Some(self.wait_scored(&txn, &consumer, &generation, pipeline)?)
                } else {
                    match pipeline.scored.try_recv() {
                        Ok(r) => Some(r),
                        Err(TryRecvError::Empty) => None,
                        Err(TryRecvError::Disconnected) => return Err(stage_stopped()),
                    }
                };
                let Some(result) = next else { break };
                match result {
                    Err(ScorerError::StoppedInOutage(e)) if stopping => {
                        // The batches not scored were never in a transaction: their records
                        // are polled again by whoever owns the partitions next.
                        tracing::warn!(error = %e, batches = pipeline.in_flight.len(), "stopping during a schema registry outage; the records not scored stay uncommitted");
                        pipeline.in_flight.clear();
                        break;
                    }
                    result => self.send_scored(&txn, &generation, pipeline, result?, summary)?,
                }
            }
            if stopping && pipeline.in_flight.is_empty() {
                break;
            }
            if !stopping {
                // With a batch being scored, take what is there; otherwise wait a little for it.
                let timeout = if pipeline.in_flight.is_empty() {
                    Duration::from_millis(50)
                } else {
                    Duration::ZERO
                };
                let batch = pipeline.spare.pop().unwrap_or_default();
                let batch = self.poll_batch(&consumer, &generation, timeout, batch)?;
                if !batch.records.is_empty() {
                    first_record.get_or_insert_with(Instant::now);
                    if self.cfg.passthrough {
                        self.forward(&txn, &batch, summary)?;
                        pipeline.spare.push(batch);
                    } else {
                        let batch = Arc::new(batch);
                        pipeline.in_flight.push_back(batch.clone());
                        pipeline.batches.send(batch).map_err(|_| stage_stopped())?;
                    }
                } else {
                    pipeline.spare.push(batch);
                    if !pipeline.in_flight.is_empty() {
                        // Nothing new: wait for the batch in flight instead of spinning.
                        match pipeline.scored.recv_timeout(Duration::from_millis(50)) {
                            Ok(result) => {
                                self.send_scored(&txn, &generation, pipeline, result?, summary)?;
                            }
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => return Err(stage_stopped()),
                        }
                    }
                }
            }
            self.commit_if_due(&txn, &consumer, &generation)?;
            if last_lag.elapsed() >= Duration::from_secs(5) {
                last_lag = Instant::now();
                self.report_lag(&consumer);
            }
        }
        // Clean shutdown: commit what was sent, leave the group.
        let rewind = txn
            .lock()
            .unwrap()
            .commit(&self.cfg.input_topic, &consumer, &self.metrics)?;
        summary.busy = first_record.map(|f| f.elapsed()).unwrap_or_default();
        if rewind {
            tracing::warn!("the last transaction was aborted at shutdown; its records will be scored again by the group");
        }
        consumer.unsubscribe();
        Ok(())
    }

    /// Commits the open transaction once it is `commit_interval` old.
    fn commit_if_due(
        &self,
        txn: &Mutex<Txn>,
        consumer: &BaseConsumer<ScorerContext>,
        generation: &AtomicU64,
    ) -> Result<(), ScorerError> {
        let mut t = txn.lock().unwrap();
        if !(t.open && t.opened_at.elapsed() >= self.cfg.commit_interval) {
            return Ok(());
        }
        let rewind = t.commit(&self.cfg.input_topic, consumer, &self.metrics)?;
        drop(t);
        if rewind {
            // Batches in flight hold records after the aborted ones: all of them are polled
            // again, and their results (of the old generation) dropped.
            generation.fetch_add(1, Ordering::AcqRel);
            self.rewind(consumer)?;
        }
        Ok(())
    }

    /// Waits for the stage's next result. A stage that waits out a schema registry outage can
    /// take long: what was sent meanwhile is committed on time, so no transaction stays open
    /// for the outage (the broker would abort it at `transaction.timeout.ms`).
    fn wait_scored(
        &self,
        txn: &Mutex<Txn>,
        consumer: &BaseConsumer<ScorerContext>,
        generation: &AtomicU64,
        pipeline: &Pipeline,
    ) -> Result<Result<Scored, ScorerError>, ScorerError> {
        let tick = self.cfg.commit_interval.max(Duration::from_millis(50));
        loop {
            match pipeline.scored.recv_timeout(tick) {
                Ok(result) => return Ok(result),
                Err(RecvTimeoutError::Timeout) => self.commit_if_due(txn, consumer, generation)?,
                Err(RecvTimeoutError::Disconnected) => return Err(stage_stopped()),
            }
        }
    }

    /// Polls a batch: waits up to `timeout` for the first record, then takes what is already
    /// there, up to `max_batch`.
    fn poll_batch(
        &self,
        consumer: &BaseConsumer<ScorerContext>,
        generation: &AtomicU64,
        mut timeout: Duration,
        mut batch: Batch,
    ) -> Result<Batch, ScorerError> {
        batch.clear();
        while batch.records.len() < self.cfg.max_batch {
            let before = generation.load(Ordering::Acquire);
            let next = consumer.poll(timeout);
            if generation.load(Ordering::Acquire) != before {
                // A rebalance ran inside this poll: the open transaction was committed without
                // the records polled so far, and the new assignment fetches from the committed
                // offsets, so those records come again. Scoring them now would duplicate them.
                batch.clear();
            }
            match next {
                Some(Ok(m)) => batch.push(m.partition(), m.offset(), m.key(), m.payload()),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                None => break,
            }
            timeout = Duration::ZERO;
        }
        batch.generation = generation.load(Ordering::Acquire);
        Ok(batch)
    }

    /// Sends the oldest batch in flight, as scored, in the open transaction with its offsets; drops
    /// it if it was polled before a rebalance or an abort. Its buffers go round again.
    fn send_scored(
        &self,
        txn: &Mutex<Txn>,
        generation: &AtomicU64,
        pipeline: &mut Pipeline,
        scored: Scored,
        summary: &mut RunSummary,
    ) -> Result<(), ScorerError> {
        let batch = pipeline
            .in_flight
            .pop_front()
            .expect("a result is for a batch in flight");
        let result = self.send_outputs(txn, generation, &batch, &scored, summary);
        pipeline.reuse(batch);
        let _ = pipeline.recycle.send(scored); // the stage may have stopped: nothing to reuse
        result
    }

    fn send_outputs(
        &self,
        txn: &Mutex<Txn>,
        generation: &AtomicU64,
        batch: &Batch,
        scored: &Scored,
        summary: &mut RunSummary,
    ) -> Result<(), ScorerError> {
        if scored.generation != generation.load(Ordering::Acquire) {
            tracing::debug!(
                records = batch.records.len(),
                "dropping a batch polled before a rebalance or abort"
            );
            return Ok(());
        }
        let mut t = txn.lock().unwrap();
        t.begin()?;
        let now = now_millis();
        // Observed locally and flushed once per batch: no atomic operations per record.
        let end_to_end = self.metrics.end_to_end_seconds.local();
        let (mut predictions, mut alerts, mut dead_letters) = (0u64, 0u64, 0u64);
        for output in &scored.outputs {
            match output {
                Output::Prediction {
                    key,
                    payload,
                    alert,
                    event_time,
                } => {
                    let key = &scored.bytes[key.clone()];
                    send_retrying(
                        &t.producer,
                        BaseRecord::to(&self.cfg.predictions_topic)
                            .key(key)
                            .payload(&scored.bytes[payload.clone()]),
                    )?;
                    predictions += 1;
                    if let Some(alert) = alert {
                        send_retrying(
                            &t.producer,
                            BaseRecord::to(&self.cfg.alerts_topic)
                                .key(key)
                                .payload(&scored.bytes[alert.clone()]),
                        )?;
                        alerts += 1;
                    }
                    end_to_end.observe((now - event_time).max(0) as f64 / 1000.0);
                }
                Output::DeadLetter { index, reason } => {
                    self.dead_letter(&t.producer, batch, &batch.records[*index], reason)?;
                    dead_letters += 1;
                }
            }
        }
        for (p, o) in batch.next_offsets() {
            t.offsets.insert(p, o);
        }
        end_to_end.flush();
        t.producer.poll(Duration::ZERO);
        let records = batch.records.len() as u64;
        summary.records += records;
        summary.predictions += predictions;
        summary.alerts += alerts;
        summary.dead_letters += dead_letters;
        self.metrics.records_in.inc_by(records);
        self.metrics.predictions_out.inc_by(predictions);
        self.metrics.alerts.inc_by(alerts);
        Ok(())
    }

    /// The passthrough baseline: the polled bytes, unchanged, to the predictions topic.
    fn forward(
        &self,
        txn: &Mutex<Txn>,
        batch: &Batch,
        summary: &mut RunSummary,
    ) -> Result<(), ScorerError> {
        let mut t = txn.lock().unwrap();
        t.begin()?;
        for r in &batch.records {
            let mut record = BaseRecord::<[u8], [u8]>::to(&self.cfg.predictions_topic);
            if let Some(k) = batch.key(r) {
                record = record.key(k);
            }
            if let Some(p) = batch.payload(r) {
                record = record.payload(p);
            }
            send_retrying(&t.producer, record)?;
        }
        for (p, o) in batch.next_offsets() {
            t.offsets.insert(p, o);
        }
        t.producer.poll(Duration::ZERO);
        summary.records += batch.records.len() as u64;
        Ok(())
    }

    /// After an abort: every partition we own goes back to its committed offset.
    fn rewind(&self, consumer: &BaseConsumer<ScorerContext>) -> Result<(), ScorerError> {
        let assigned = consumer.assignment()?;
        if assigned.count() == 0 {
            return Ok(());
        }
        let committed = consumer.committed_offsets(assigned, Duration::from_secs(10))?;
        let mut seek = TopicPartitionList::new();
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            seek.add_partition_offset(&self.cfg.input_topic, e.partition(), offset)?;
        }
        tracing::info!(
            partitions = seek.count(),
            "rewinding to the committed offsets"
        );
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
        batch: &Batch,
        r: &RawRecord,
        reason: &str,
    ) -> Result<(), ScorerError> {
        self.metrics.dlq.inc();
        tracing::warn!(
            partition = r.partition,
            offset = r.offset,
            reason,
            "undecodable record to the DLQ"
        );
        let headers = dead_letter_headers(reason, &self.cfg.input_topic, r.partition, r.offset);
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.cfg.dlq_topic).headers(headers);
        if let Some(k) = batch.key(r) {
            record = record.key(k);
        }
        if let Some(p) = batch.payload(r) {
            record = record.payload(p);
        }
        Ok(send_retrying(producer, record)?)
    }
}

fn stage_stopped() -> ScorerError {
    ScorerError::Scoring("the scoring thread stopped (see the error above)".into())
}

/// Aborts the open transaction when the scoring loop exits with an error.
///
/// Without it, dropping the consumer closes it, the close revokes the partitions, and the revoke
/// callback commits the open transaction, whose offsets may already cover the record that was
/// being processed when the error came: that record would be skipped for good (a real loss seen in
/// the broker-restart fault scenario). On a clean exit the transaction is already committed and
/// this does nothing.
/// The Kafka thread's side of the pipeline to the scoring stage.
///
/// Buffers go round instead of being allocated per batch: a fresh buffer of megabytes is
/// page-faulted in, and the kernel zeroing those pages cost about as much CPU as the scoring.
struct Pipeline {
    batches: SyncSender<Arc<Batch>>,
    scored: Receiver<Result<Scored, ScorerError>>,
    /// Sent batches' output buffers, back to the stage.
    recycle: Sender<Scored>,
    /// Batches with the stage, oldest first.
    in_flight: VecDeque<Arc<Batch>>,
    /// Input buffers to poll into.
    spare: Vec<Batch>,
}

impl Pipeline {
    fn reuse(&mut self, batch: Arc<Batch>) {
        // The stage lets go of a batch before it returns its result.
        if let Ok(batch) = Arc::try_unwrap(batch) {
            self.spare.push(batch);
        }
    }
}

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

pub use fraudstream_common::model::bootstrap_record;
