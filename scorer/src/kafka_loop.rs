//! The scorer's Kafka thread: polls batches and hands them to the scoring stage, sends what the
//! stage scored inside the open transaction with the batch's offsets, commits every
//! `commit_interval`, and goes back to the committed offsets after an abort.

use crate::resume::Resume;
use crate::stage::{self, Batch, Output, RawRecord, Scored};
use crate::txn::{AbortOnExit, ScorerContext, Txn, PRODUCER_DEFAULTS};
use crate::{Engine, RunSummary, ScorerError};
use fraudstream_common::kafka::{
    committed_offsets_settled, dead_letter_headers, send_retrying, watermarks, with_sized,
    BULK_FETCH,
};
use fraudstream_common::now_millis;
use fraudstream_common::trace;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Batches handed to the scoring stage and not yet sent. With the stage about as fast as the
/// Kafka side, 4 let each side run on while the other is descheduled (measured against 2: 4 was
/// faster in 6 of 6 runs, ~10%; 6 was no faster). At a steady rate below capacity a poll takes
/// what is there, so the pipeline rarely holds more than one batch and latency does not grow.
const PIPELINE_DEPTH: usize = 4;

/// How long the consumer stays in the group, not polling, while the stage loads the model.
const JOIN_EARLY_WAIT: Duration = Duration::from_secs(2);

const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("isolation.level", "read_committed"),
    // Never jump to a partition's start on librdkafka's own judgement: a position it finds
    // invalid (no committed offset, out of range, or a log truncation reported after a broker
    // restart) comes to the loop as an error instead, which commits what was sent and goes back to
    // the committed offsets (see `Engine::back_to_committed`). With `earliest`, such a reset re-scored
    // partitions from their start: duplicates on the predictions topic.
    ("auto.offset.reset", "error"),
    ("fetch.min.bytes", "1"),
    ("fetch.wait.max.ms", "50"),
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "1000"),
    // Also the member's rebalance timeout: how long the coordinator holds a rejoin waiting for the
    // group's other members. After a broker restart the scorers' sessions had expired on their
    // side and their rejoin was held for the 300 s default (a fault run with two restarts in a
    // row: nothing scored for a whole scenario). Above a registry outage the loop waits out
    // without polling (`wait_scored`): the 30 s one of the fault suite stays in the group.
    ("max.poll.interval.ms", "60000"),
    ("partition.assignment.strategy", "range,roundrobin"),
];

impl Engine {
    pub(crate) fn run(
        self: Arc<Self>,
        updates: crate::Updates,
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
                    updates,
                    bootstrap,
                    stage_ready,
                    stage_batches,
                    stage_scored,
                    recycled,
                )
            })
            .map_err(ScorerError::Thread)?;
        let result = (|| {
            // Joining the group takes broker round trips (~0.5 s here): started while the stage
            // loads the model, not after.
            let c = self.connect()?;
            c.consumer.subscribe(&[&self.cfg.input_topic])?;
            let Some(model) = self.await_model(&c, &ready)? else {
                return Ok(()); // stopped before a champion was known
            };
            let mut pipeline = Pipeline {
                batches,
                scored,
                recycle,
                in_flight: VecDeque::new(),
                spare: Vec::new(),
            };
            let result = self.run_kafka(c, &model, &mut pipeline, &mut summary);
            drop(pipeline); // the stage ends when its input closes
            result
        })();
        if result.is_err() {
            // A stage still waiting for a champion ends on stop, not on a closed channel.
            self.stop.store(true, Ordering::Relaxed);
        }
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
        c: Connection,
        model: &str,
        pipeline: &mut Pipeline,
        summary: &mut RunSummary,
    ) -> Result<(), ScorerError> {
        self.health.set_ready(format!("scoring with {model}"));
        let mut first_record: Option<Instant> = None;
        let mut last_poll_full = false;
        let stop_after = self.cfg.stop_after.unwrap_or(u64::MAX);
        loop {
            let in_flight_records: u64 = pipeline
                .in_flight
                .iter()
                .map(|b| b.records.len() as u64)
                .sum();
            let stopping = self.stop.load(Ordering::Relaxed)
                || summary.records + in_flight_records >= stop_after;
            if let Some(e) = c.fatal.lock().unwrap().take() {
                return Err(ScorerError::Rebalance(Box::new(e)));
            }
            self.send_ready(&c, pipeline, stopping, summary)?;
            if stopping && pipeline.in_flight.is_empty() {
                break;
            }
            // Caught up: everything polled is sent, and the last poll took all there was.
            let caught_up = pipeline.in_flight.is_empty() && !last_poll_full;
            self.commit_if_due(&c.txn, &c.consumer, &c.generation, caught_up)?;
            if caught_up {
                c.txn.lock().unwrap().push_lingering();
            }
            if !stopping {
                let polled = self.poll_into(&c, pipeline, summary)?;
                if polled > 0 {
                    first_record.get_or_insert_with(Instant::now);
                }
                last_poll_full = polled >= self.cfg.max_batch;
            }
        }
        // Clean shutdown: commit what was sent, leave the group.
        let rewind =
            c.txn
                .lock()
                .unwrap()
                .commit(&self.cfg.input_topic, &c.consumer, &self.metrics)?;
        summary.busy = first_record.map(|f| f.elapsed()).unwrap_or_default();
        if rewind {
            tracing::warn!("the last transaction was aborted at shutdown; its records will be scored again by the group");
        }
        c.consumer.unsubscribe();
        Ok(())
    }

    /// The transactional producer and the group consumer whose rebalance callback commits it.
    fn connect(&self) -> Result<Connection, ScorerError> {
        let producer_sizes = self.cfg.memory.producer();
        let mut config = self
            .cfg
            .kafka
            .client_config_with(&with_sized(PRODUCER_DEFAULTS, &producer_sizes))?;
        config.set("transactional.id", self.cfg.transactional_id());
        let txn = Arc::new(Mutex::new(Txn::new(config)?));
        let fatal = Arc::new(Mutex::new(None));
        let generation = Arc::new(AtomicU64::new(0));
        let consumer: BaseConsumer<ScorerContext> = self
            .cfg
            .kafka
            .client_config_with(&with_sized(
                &[CONSUMER_DEFAULTS, BULK_FETCH].concat(),
                &self.cfg.memory.consumer(self.cfg.max_batch),
            ))?
            .set("group.id", &self.cfg.group)
            .create_with_context(ScorerContext {
                txn: txn.clone(),
                topic: self.cfg.input_topic.clone(),
                metrics: self.metrics.clone(),
                fatal: fatal.clone(),
                generation: generation.clone(),
            })?;
        Ok(Connection {
            _abort_on_exit: AbortOnExit(txn.clone()),
            consumer,
            txn,
            generation,
            fatal,
        })
    }

    /// Sends what the stage has scored; waits for it when the pipeline is full or draining.
    fn send_ready(
        &self,
        c: &Connection,
        pipeline: &mut Pipeline,
        stopping: bool,
        summary: &mut RunSummary,
    ) -> Result<(), ScorerError> {
        let mut waited = false;
        loop {
            let in_flight = &pipeline.in_flight;
            let must_wait =
                in_flight.len() >= PIPELINE_DEPTH || (stopping && !in_flight.is_empty());
            let next = if must_wait && !waited {
                waited = true;
                Some(self.wait_scored(&c.txn, &c.consumer, &c.generation, pipeline)?)
            } else {
                match pipeline.scored.try_recv() {
                    Ok(r) => Some(r),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return Err(stage_stopped()),
                }
            };
            let Some(result) = next else { return Ok(()) };
            match result {
                Err(ScorerError::StoppedInOutage(e)) if stopping => {
                    // The batches not scored were never in a transaction: their records are
                    // polled again by whoever owns the partitions next.
                    tracing::warn!(error = %e, batches = pipeline.in_flight.len(), "stopping during a schema registry outage; the records not scored stay uncommitted");
                    pipeline.in_flight.clear();
                    return Ok(());
                }
                result => self.send_scored(&c.txn, &c.generation, pipeline, result?, summary)?,
            }
        }
    }

    /// Polls a batch and hands it to the stage (the passthrough sends it at once); true when it
    /// held records.
    fn poll_into(
        &self,
        c: &Connection,
        pipeline: &mut Pipeline,
        summary: &mut RunSummary,
    ) -> Result<usize, ScorerError> {
        // With a batch being scored, take what is there; otherwise wait a little for it, but not
        // past the moment the open transaction may commit.
        let timeout = if pipeline.in_flight.is_empty() {
            let t = c.txn.lock().unwrap();
            match t.open {
                true => self
                    .cfg
                    .min_commit_interval
                    .saturating_sub(t.opened_at.elapsed()),
                false => Duration::from_millis(50),
            }
        } else {
            Duration::ZERO
        };
        let batch = pipeline.spare.pop().unwrap_or_default();
        let batch = self.poll_batch(c, timeout, batch)?;
        if batch.records.is_empty() {
            pipeline.spare.push(batch);
            if !pipeline.in_flight.is_empty() {
                // Nothing new: wait for the batch in flight instead of spinning.
                match pipeline.scored.recv_timeout(Duration::from_millis(50)) {
                    Ok(result) => {
                        self.send_scored(&c.txn, &c.generation, pipeline, result?, summary)?
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return Err(stage_stopped()),
                }
            }
            return Ok(0);
        }
        let polled = batch.records.len();
        if self.cfg.passthrough {
            self.forward(&c.txn, &batch, summary)?;
            pipeline.spare.push(batch);
        } else {
            let batch = Arc::new(batch);
            pipeline.in_flight.push_back(batch.clone());
            pipeline.batches.send(batch).map_err(|_| stage_stopped())?;
        }
        Ok(polled)
    }

    /// The champion's name once the stage has loaded it (None: stopped first). A subscribed
    /// consumer that does not poll still holds the partitions the group gives it: when the model
    /// takes longer than [`JOIN_EARLY_WAIT`] (no champion yet, say), it leaves the group until
    /// the model is there, so other instances keep scoring them.
    fn await_model(
        &self,
        c: &Connection,
        ready: &Receiver<Result<String, ScorerError>>,
    ) -> Result<Option<String>, ScorerError> {
        match ready.recv_timeout(JOIN_EARLY_WAIT) {
            Ok(loaded) => return loaded.map(Some),
            Err(RecvTimeoutError::Disconnected) => return Ok(None),
            Err(RecvTimeoutError::Timeout) => {}
        }
        c.consumer.unsubscribe();
        let Ok(loaded) = ready.recv() else {
            return Ok(None);
        };
        let model = loaded?;
        c.consumer.subscribe(&[&self.cfg.input_topic])?;
        Ok(Some(model))
    }

    /// Commits the open transaction once it is `commit_interval` old, or, when the loop has
    /// `caught_up` with its input, once it is `min_commit_interval` old: light traffic waits no
    /// longer than it must, a full stream still commits rarely (each commit is a broker round
    /// trip that holds the loop).
    fn commit_if_due(
        &self,
        txn: &Mutex<Txn>,
        consumer: &BaseConsumer<ScorerContext>,
        generation: &AtomicU64,
        caught_up: bool,
    ) -> Result<(), ScorerError> {
        let mut t = txn.lock().unwrap();
        let age = t.opened_at.elapsed();
        let due =
            age >= self.cfg.commit_interval || (caught_up && age >= self.cfg.min_commit_interval);
        if !(t.open && due) {
            return Ok(());
        }
        let aborted = t.commit(&self.cfg.input_topic, consumer, &self.metrics)?;
        drop(t);
        if aborted {
            self.back_to_committed(consumer, generation, Back::Aborted)?;
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
                Err(RecvTimeoutError::Timeout) => {
                    self.commit_if_due(txn, consumer, generation, false)?
                }
                Err(RecvTimeoutError::Disconnected) => return Err(stage_stopped()),
            }
        }
    }

    /// Polls a batch: waits up to `timeout` for the first record, then takes what is already
    /// there, up to `max_batch`.
    fn poll_batch(
        &self,
        c: &Connection,
        mut timeout: Duration,
        mut batch: Batch,
    ) -> Result<Batch, ScorerError> {
        let (consumer, generation) = (&c.consumer, &*c.generation);
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
                Some(Ok(m)) => {
                    // Headers are only looked at while traces are exported.
                    if trace::exporting() {
                        if let Some(tp) = trace::from_headers(m.headers()) {
                            batch.traced.push((batch.records.len(), tp));
                        }
                    }
                    batch.push(m.partition(), m.offset(), m.key(), m.payload())
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    // What was sent is committed first (its offsets are right); the records
                    // polled so far come again from the committed offsets.
                    c.txn
                        .lock()
                        .unwrap()
                        .commit(&self.cfg.input_topic, consumer, &self.metrics)?;
                    self.back_to_committed(consumer, generation, Back::NoValidPosition)?;
                    batch.clear();
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                None => break,
            }
            timeout = Duration::ZERO;
        }
        if self.below_our_commit(c, &batch) {
            self.back_to_committed(consumer, generation, Back::BelowOurCommit)?;
            batch.clear();
        }
        batch.generation = generation.load(Ordering::Acquire);
        Ok(batch)
    }

    /// Whether `batch` holds a record below an offset this process committed: scored and committed
    /// already. Only each run of one partition's records is looked at (they come in order).
    fn below_our_commit(&self, c: &Connection, batch: &Batch) -> bool {
        if batch.records.is_empty() {
            return false;
        }
        let txn = c.txn.lock().unwrap();
        let mut run = None;
        batch.records.iter().any(|r| {
            let first_of_run = run.replace(r.partition) != Some(r.partition);
            first_of_run
                && txn
                    .committed
                    .floor(r.partition)
                    .is_some_and(|f| r.offset < f)
        })
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
        let mut traced = scored.traced.iter().peekable();
        for (index, output) in scored.outputs.iter().enumerate() {
            let headers = traced
                .next_if(|(i, _)| *i == index)
                .map(|(_, tp)| trace::headers(tp));
            match output {
                Output::Prediction {
                    key,
                    payload,
                    alert,
                    event_time,
                } => {
                    let key = &scored.bytes[key.clone()];
                    let mut record = BaseRecord::to(&self.cfg.predictions_topic)
                        .key(key)
                        .payload(&scored.bytes[payload.clone()]);
                    if let Some(h) = &headers {
                        record = record.headers(h.clone());
                    }
                    send_retrying(&t.producer, record)?;
                    predictions += 1;
                    if let Some(alert) = alert {
                        let mut record = BaseRecord::to(&self.cfg.alerts_topic)
                            .key(key)
                            .payload(&scored.bytes[alert.clone()]);
                        if let Some(h) = headers {
                            record = record.headers(h);
                        }
                        send_retrying(&t.producer, record)?;
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
        t.lingering = true;
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
        t.lingering = true;
        t.producer.poll(Duration::ZERO);
        summary.records += batch.records.len() as u64;
        Ok(())
    }

    /// Every partition we own goes back to its committed offset. Batches in flight hold records
    /// after it: they are polled again, and their results (of the old generation) dropped.
    fn back_to_committed(
        &self,
        consumer: &BaseConsumer<ScorerContext>,
        generation: &AtomicU64,
        why: Back,
    ) -> Result<(), ScorerError> {
        generation.fetch_add(1, Ordering::AcqRel);
        tracing::info!(why = why.describe(), "going back to the committed offsets");
        self.go_to_committed(consumer, why)
    }

    /// Assigns every partition we own at its committed offset (settled: see
    /// [`committed_offsets_settled`]), each named in the log: a partition never committed from
    /// its start; after [`Back::NoValidPosition`], one whose committed offset is outside the log
    /// from the nearest end of the log. Never below what this process committed (see
    /// [`crate::resume`]): an answer below it is overruled, with a warning. An assignment rather
    /// than a seek: a partition librdkafka stopped cannot be sought.
    fn go_to_committed(
        &self,
        consumer: &BaseConsumer<ScorerContext>,
        why: Back,
    ) -> Result<(), ScorerError> {
        let assigned = consumer.assignment()?;
        if assigned.count() == 0 {
            return Ok(());
        }
        let committed = committed_offsets_settled(consumer, &assigned)?;
        let mut at = TopicPartitionList::new();
        let (mut offsets, mut never) = (Vec::new(), Vec::new());
        for e in committed.elements() {
            let p = e.partition();
            let offset = match self.resume_at(consumer, p, e.offset(), why)? {
                Some(o) => {
                    offsets.push((p, o));
                    Offset::Offset(o)
                }
                None => {
                    never.push(p);
                    Offset::Beginning
                }
            };
            at.add_partition_offset(&self.cfg.input_topic, p, offset)?;
        }
        tracing::info!(
            ?offsets,
            never_committed = ?never,
            "going to the committed offsets (the start of a partition never committed)"
        );
        consumer.assign(&at)?;
        Ok(())
    }

    /// Where `partition` resumes given the group's answer `group` (None: from its start).
    fn resume_at(
        &self,
        consumer: &BaseConsumer<ScorerContext>,
        partition: i32,
        group: Offset,
        why: Back,
    ) -> Result<Option<i64>, ScorerError> {
        let group = match group {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        let mut txn = consumer.context().txn.lock().unwrap();
        let o = match txn.committed.resume(partition, group) {
            Resume::Start => return Ok(None),
            Resume::Group(o) => o,
            Resume::Ours { group, ours } => {
                tracing::warn!(partition, group_answer = ?group, committed_by_us = ours, "the group coordinator answered an offset below one this scorer committed (seen after a broker restart: the broker lost or had not loaded the group's offsets); going on from ours");
                ours
            }
        };
        // After an abort the committed offsets are where this instance left them.
        let o = match why {
            Back::Aborted | Back::BelowOurCommit => o,
            Back::NoValidPosition => self.within_log(consumer, partition, o)?,
        };
        // A log truncated below what we committed: those records are gone.
        txn.committed.truncated(partition, o);
        Ok(Some(o))
    }

    /// `committed`, or the nearest end of the partition's log when it is outside it.
    fn within_log(
        &self,
        consumer: &BaseConsumer<ScorerContext>,
        partition: i32,
        committed: i64,
    ) -> Result<i64, ScorerError> {
        let (low, high) = watermarks(consumer, &self.cfg.input_topic, partition)?;
        let at = committed.clamp(low, high);
        if at < committed {
            tracing::warn!(partition, committed, log_end = high, "the committed offset is past the log's end (the log was truncated: an unclean leader election?); going on from the end");
        } else if at > committed {
            tracing::warn!(partition, committed, log_start = low, "records before the log's start were deleted (retention) before they were scored; going on from the log's start");
        }
        Ok(at)
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
    ScorerError::StageStopped
}

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

/// The Kafka clients of one run: the consumer and the transaction its rebalance callback commits.
struct Connection {
    /// First, so dropped before the consumer: see [`AbortOnExit`].
    _abort_on_exit: AbortOnExit,
    consumer: BaseConsumer<ScorerContext>,
    txn: Arc<Mutex<Txn>>,
    /// Bumped on every rebalance and abort: batches polled before are dropped.
    generation: Arc<AtomicU64>,
    /// An error of the rebalance callback, for the loop to stop on.
    fatal: Arc<Mutex<Option<ScorerError>>>,
}

impl Pipeline {
    fn reuse(&mut self, batch: Arc<Batch>) {
        // The stage lets go of a batch before it returns its result.
        if let Ok(batch) = Arc::try_unwrap(batch) {
            self.spare.push(batch);
        }
    }
}

/// Why the loop goes back to the committed offsets.
#[derive(Clone, Copy)]
enum Back {
    /// A commit was aborted: the records after the committed offsets are scored again.
    Aborted,
    /// librdkafka found no valid position for a partition (never committed, out of the log's
    /// range, or a truncation it detected after a broker restart) and stopped fetching it. The
    /// committed offset may then lie outside the log too: it is checked against the log.
    NoValidPosition,
    /// A record polled after an assignment lies below an offset this process committed: the
    /// position librdkafka fetched from the group was behind (see [`crate::resume`]).
    BelowOurCommit,
}

impl Back {
    fn describe(self) -> &'static str {
        match self {
            Back::Aborted => "the transaction was aborted",
            Back::NoValidPosition => "a partition had no valid position",
            Back::BelowOurCommit => "a record polled was below an offset this scorer committed",
        }
    }
}
