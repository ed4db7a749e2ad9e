//! Replays a PaySim CSV into Kafka: `Transaction`s to `transactions` (key = origin account) and,
//! after a delay, `Label`s to `labels` (key = transaction id).
//!
//! Delivery: at-least-once with the idempotent producer (no duplicates from retries within a
//! run). Transaction ids are derived from the file and line (`<prefix>-<line>`), so publishing
//! the same file again yields the same ids and the sink's dedup keeps one row per transaction.

pub use crate::config::{LabelDelay, PublishConfig};
use fraudstream_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
use fraudstream_common::{now_millis, trace, CommonError};
use fraudstream_schemas::{Codec, Label, SchemaError, Transaction};
use paysim::format::{BadRow, CsvError, CsvReader};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Errors that stop a publish run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Common(#[from] CommonError),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("invalid option: {0}")]
    Config(String),
}

/// Running counts, for progress display and the final summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishSummary {
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub labels_sent: u64,
    pub labels_acked: u64,
    pub labels_failed: u64,
    /// Labels sent before their delay because the run was interrupted.
    pub labels_early: u64,
    /// The most labels that waited for their time at once (bounded by the delay, not the run).
    pub labels_pending_peak: u64,
    pub bad_row_count: u64,
    /// The first bad rows (at most 100), with line and reason.
    pub bad_rows: Vec<BadRow>,
    pub first_delivery_error: Option<String>,
    pub interrupted: bool,
    pub elapsed: Duration,
}

impl PublishSummary {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

const TX: usize = 0;
const LABEL: usize = 1;

/// Counts broker acknowledgements per record kind.
#[derive(Default)]
struct Deliveries {
    acked: [AtomicU64; 2],
    failed: [AtomicU64; 2],
    first_error: Mutex<Option<String>>,
}

struct DeliveryContext(Arc<Deliveries>);
impl ClientContext for DeliveryContext {}
impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, kind: usize) {
        match result {
            Ok(_) => self.0.acked[kind].fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                self.0
                    .first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
                self.0.failed[kind].fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Producer settings tuned for throughput; any of them can be overridden with `-X`.
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "10"),
    ("batch.size", "1000000"),
    ("batch.num.messages", "20000"),
    ("compression.type", "lz4"),
    ("queue.buffering.max.messages", "1000000"),
    ("queue.buffering.max.kbytes", "1048576"),
];

/// A label waiting for its time. `due_step` is on the replay's clock, which keeps counting
/// across `--loop` passes (see [`ReplayClock`]). Ordered by when it is due: with a delay range
/// labels fall due out of order, so they wait in a heap.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct PendingLabel {
    due_step: i32,
    due_at: Instant,
    transaction_id: String,
    is_fraud: bool,
}

/// Where a transaction's delay falls in the label window: a fraction in [0, 1) from its id, so a
/// replay of the same file repeats every delay.
fn window_fraction(id: &str) -> f64 {
    // FNV-1a, mixed (splitmix64's finaliser: ids differ only in their last digits), then the
    // top 53 bits as a fraction.
    let mut h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

type Pending = BinaryHeap<Reverse<PendingLabel>>;

/// The replay's step clock. With `--loop`, pass `k` replays the file's steps shifted by `k` times
/// the file's span, so time keeps moving forward: step-delayed labels from the end of one pass
/// fall due early in the next (instead of waiting for a step that never comes again), and
/// `--speedup` keeps pacing after the first pass.
#[derive(Default)]
struct ReplayClock {
    /// Added to every step of the current pass.
    offset: i32,
    /// The first step of the whole run (pacing starts there).
    first: Option<i32>,
    /// The current pass's lowest and highest file step.
    pass_range: Option<(i32, i32)>,
}

impl ReplayClock {
    /// The continuous step of a file row in the current pass.
    fn step(&mut self, file_step: i32) -> i32 {
        let (lo, hi) = self.pass_range.unwrap_or((file_step, file_step));
        self.pass_range = Some((lo.min(file_step), hi.max(file_step)));
        let step = file_step + self.offset;
        self.first.get_or_insert(step);
        step
    }

    /// Steps since the run's first row.
    fn elapsed_steps(&self, step: i32) -> i32 {
        (step - self.first.unwrap_or(step)).max(0)
    }

    /// The file starts over: the next pass begins one step after this one ended.
    fn next_pass(&mut self) {
        if let Some((lo, hi)) = self.pass_range.take() {
            self.offset += hi - lo + 1;
        }
    }
}

struct Sender {
    producer: ThreadedProducer<DeliveryContext>,
    deliveries: Arc<Deliveries>,
    tx_schema: u32,
    label_schema: u32,
    /// Resolved once: ids are `<id_prefix>-<line>`.
    id_prefix: String,
    cfg: PublishConfig,
}

impl Sender {
    /// Sends one record, waiting while librdkafka's queue is full.
    fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        kind: usize,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), PublishError> {
        let mut record = BaseRecord::with_opaque_to(topic, kind)
            .key(key)
            .payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    fn send_label(&self, l: &PendingLabel) -> Result<(), PublishError> {
        let label = Label::from_file(l.transaction_id.clone(), l.is_fraud, now_millis());
        let payload = Codec::encode_with_id(self.label_schema, &label)?;
        self.send(
            &self.cfg.labels_topic,
            &label.transaction_id,
            &payload,
            LABEL,
            None,
        )
    }

    /// Sends transaction number `n` of the run; while traces are exported, one in `trace_every`
    /// starts a trace that the scorer and the sink continue (its `traceparent` in a header).
    fn send_transaction(&self, tx: &Transaction, n: u64) -> Result<(), PublishError> {
        let payload = Codec::encode_with_id(self.tx_schema, tx)?;
        let topic = &self.cfg.transactions_topic;
        if !(trace::exporting() && n.is_multiple_of(self.cfg.trace_every)) {
            return self.send(topic, &tx.name_orig, &payload, TX, None);
        }
        let span = tracing::info_span!("publish_transaction", transaction_id = %tx.transaction_id);
        let headers = trace::traceparent(&span).map(|tp| trace::headers(&tp));
        let _entered = span.enter();
        self.send(topic, &tx.name_orig, &payload, TX, headers)
    }
}

/// Publishes the file. `stop` ends the run early (Ctrl-C): everything sent is flushed and
/// reported. `progress` is called about ten times a second with the running counts.
pub async fn publish(
    kafka: &KafkaArgs,
    cfg: PublishConfig,
    stop: Arc<AtomicBool>,
    progress: impl FnMut(&PublishSummary) + Send + 'static,
) -> Result<PublishSummary, PublishError> {
    if cfg.rate.is_some() && cfg.speedup.is_some() {
        return Err(PublishError::Config(
            "use --rate or --speedup, not both".into(),
        ));
    }
    if matches!(cfg.rate, Some(r) if r <= 0.0) || matches!(cfg.speedup, Some(s) if s <= 0.0) {
        return Err(PublishError::Config(
            "--rate and --speedup must be positive".into(),
        ));
    }
    // Open the file first: a missing file or wrong header fails before anything is sent.
    CsvReader::open(&cfg.input)?;
    let codec = kafka.codec()?;
    let tx_schema = codec
        .schema_id::<Transaction>(&cfg.transactions_topic)
        .await?;
    let label_schema = codec.schema_id::<Label>(&cfg.labels_topic).await?;
    ensure_topics(
        &kafka.admin()?,
        &[
            TopicSpec::new(&cfg.transactions_topic, cfg.partitions),
            TopicSpec::new(&cfg.labels_topic, cfg.partitions),
        ],
    )
    .await?;
    let deliveries = Arc::new(Deliveries::default());
    let producer = kafka
        .client_config_with(PRODUCER_DEFAULTS)?
        .create_with_context(DeliveryContext(deliveries.clone()))?;
    let sender = Sender {
        producer,
        deliveries,
        tx_schema,
        label_schema,
        id_prefix: cfg.id_prefix(),
        cfg,
    };
    tokio::task::spawn_blocking(move || run(sender, stop, progress))
        .await
        .map_err(|e| PublishError::Config(format!("publisher thread failed: {e}")))?
}

impl Sender {
    /// Sleeps until the next transaction is due: by `--rate`, or by `--speedup` (simulated steps
    /// per second); at once otherwise.
    fn pace(&self, start: Instant, sent: u64, elapsed_steps: i32) {
        let due = match (self.cfg.rate, self.cfg.speedup) {
            (Some(rate), _) => Duration::from_secs_f64(sent as f64 / rate),
            (_, Some(speedup)) => Duration::from_secs_f64(elapsed_steps as f64 / speedup),
            _ => return,
        };
        let now = start.elapsed();
        if due > now + Duration::from_millis(1) {
            std::thread::sleep(due - now);
        }
    }

    /// Sends the pending labels whose time has come (by step or by clock).
    fn send_due_labels(
        &self,
        pending: &mut Pending,
        step: i32,
        now: Instant,
        summary: &mut PublishSummary,
    ) -> Result<(), PublishError> {
        while let Some(Reverse(p)) = pending.peek() {
            let ready = match self.cfg.label_delay {
                LabelDelay::Steps(..) => p.due_step <= step,
                LabelDelay::Seconds(..) => p.due_at <= now,
            };
            if !ready {
                break;
            }
            self.send_label(p)?;
            summary.labels_sent += 1;
            pending.pop();
        }
        Ok(())
    }

    /// The label of a transaction just sent, due after `--label-delay`.
    fn label(&self, step: i32, now: Instant, id: String, is_fraud: bool) -> PendingLabel {
        let delay = self.cfg.label_delay.of(is_fraud, window_fraction(&id));
        PendingLabel {
            due_step: match self.cfg.label_delay {
                LabelDelay::Steps(..) => step + delay as i32,
                LabelDelay::Seconds(..) => i32::MAX,
            },
            // From now, after the send, not from the loop's `now`: the transaction's event_time
            // was taken in between (a send that waited on a full queue made labels arrive a few
            // ms before the promised delay).
            due_at: match self.cfg.label_delay {
                LabelDelay::Seconds(..) => Instant::now() + Duration::from_secs_f64(delay),
                LabelDelay::Steps(..) => now,
            },
            transaction_id: id,
            is_fraud,
        }
    }

    /// The stream has ended: labels in step mode are all due now; in seconds mode it waits for
    /// them, unless interrupted (then it sends them early rather than lose them).
    fn send_remaining_labels(
        &self,
        mut pending: Pending,
        stop: &AtomicBool,
        summary: &mut PublishSummary,
        mut tick: impl FnMut(&mut PublishSummary),
    ) -> Result<(), PublishError> {
        while let Some(Reverse(p)) = pending.pop() {
            if let LabelDelay::Seconds(..) = self.cfg.label_delay {
                let now = Instant::now();
                if p.due_at > now && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(p.due_at - now);
                } else if p.due_at > now {
                    summary.labels_early += 1;
                }
            }
            self.send_label(&p)?;
            summary.labels_sent += 1;
            tick(summary);
        }
        Ok(())
    }

    /// Sends `label` now when there is no delay; otherwise keeps it until due.
    fn queue_label(
        &self,
        label: PendingLabel,
        pending: &mut Pending,
        summary: &mut PublishSummary,
    ) -> Result<(), PublishError> {
        if self.cfg.label_delay.is_none() {
            self.send_label(&label)?;
            summary.labels_sent += 1;
        } else {
            pending.push(Reverse(label));
            summary.labels_pending_peak = summary.labels_pending_peak.max(pending.len() as u64);
        }
        Ok(())
    }
}

/// The next row that parses; a bad one is counted and kept for the report (the first 100), or
/// ends the run with `--strict`.
fn next_good_row(
    reader: &mut CsvReader<impl std::io::BufRead>,
    strict: bool,
    summary: &mut PublishSummary,
) -> Result<Option<(u64, paysim::PaySimRow)>, PublishError> {
    loop {
        let Some((line, row)) = reader.next_row()? else {
            return Ok(None);
        };
        match row {
            Ok(r) => return Ok(Some((line, r))),
            Err(bad) => {
                if strict {
                    return Err(reader.strict_error(&bad).into());
                }
                if summary.bad_rows.len() < 100 {
                    summary.bad_rows.push(bad);
                }
                summary.bad_row_count += 1;
            }
        }
    }
}

fn run(
    s: Sender,
    stop: Arc<AtomicBool>,
    mut progress: impl FnMut(&PublishSummary),
) -> Result<PublishSummary, PublishError> {
    let start = Instant::now();
    let mut summary = PublishSummary::default();
    let mut pending = Pending::new();
    let mut last_progress = Instant::now();
    let mut clock = ReplayClock::default();
    let limit = s.cfg.limit.unwrap_or(u64::MAX);
    let mut round = 0u32;
    let snapshot = |summary: &mut PublishSummary, d: &Deliveries| {
        summary.acked = d.acked[TX].load(Ordering::Relaxed);
        summary.failed = d.failed[TX].load(Ordering::Relaxed);
        summary.labels_acked = d.acked[LABEL].load(Ordering::Relaxed);
        summary.labels_failed = d.failed[LABEL].load(Ordering::Relaxed);
        summary.elapsed = start.elapsed();
    };
    'file: loop {
        let mut reader = CsvReader::open(&s.cfg.input)?;
        let mut sent_this_round = 0u64;
        while summary.sent < limit && !stop.load(Ordering::Relaxed) {
            let Some((line, row)) = next_good_row(&mut reader, s.cfg.strict, &mut summary)? else {
                break;
            };
            let step = clock.step(row.step);
            s.pace(start, summary.sent, clock.elapsed_steps(step));
            let now = Instant::now();
            s.send_due_labels(&mut pending, step, now, &mut summary)?;
            let id = if round == 0 {
                format!("{}-{line}", s.id_prefix)
            } else {
                format!("{}-{round}-{line}", s.id_prefix)
            };
            let is_fraud = row.is_fraud;
            let tx = row.into_transaction(id, now_millis());
            s.send_transaction(&tx, summary.sent)?;
            summary.sent += 1;
            sent_this_round += 1;
            s.queue_label(
                s.label(step, now, tx.transaction_id, is_fraud),
                &mut pending,
                &mut summary,
            )?;
            if last_progress.elapsed() >= Duration::from_millis(100) {
                last_progress = Instant::now();
                snapshot(&mut summary, &s.deliveries);
                progress(&summary);
            }
        }
        let more = s.cfg.repeat
            && sent_this_round > 0
            && summary.sent < limit
            && !stop.load(Ordering::Relaxed);
        if !more {
            break 'file;
        }
        round += 1;
        clock.next_pass();
    }
    s.send_remaining_labels(pending, &stop, &mut summary, |summary| {
        if last_progress.elapsed() >= Duration::from_millis(100) {
            last_progress = Instant::now();
            snapshot(summary, &s.deliveries);
            progress(summary);
        }
    })?;
    summary.interrupted = stop.load(Ordering::Relaxed);
    // Everything sent is flushed and acknowledged (or reported failed) before we return.
    flush_all(&s.producer, || {
        snapshot(&mut summary, &s.deliveries);
        progress(&summary);
    })?;
    snapshot(&mut summary, &s.deliveries);
    summary.first_delivery_error = s.deliveries.first_error.lock().unwrap().clone();
    progress(&summary);
    Ok(summary)
}

/// Waits until librdkafka has an answer for every record sent: acknowledged, or failed once
/// `message.timeout.ms` (5 minutes unless `-X` says otherwise) has passed, so the wait is bounded
/// by librdkafka's own. A broker down for a while only makes it longer: a fixed 60 s once failed
/// a run (the `broker-down-40s` fault scenario) whose broker came back after it.
fn flush_all(
    producer: &ThreadedProducer<DeliveryContext>,
    mut each_second: impl FnMut(),
) -> Result<(), KafkaError> {
    loop {
        match producer.flush(Duration::from_secs(1)) {
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => each_second(),
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_delay_parses_steps_and_seconds() {
        let parse = |s: &str| s.parse::<LabelDelay>();
        assert_eq!(parse("24"), Ok(LabelDelay::Steps(24, 24)));
        assert_eq!(parse("6steps"), Ok(LabelDelay::Steps(6, 6)));
        assert_eq!(parse("2..24steps"), Ok(LabelDelay::Steps(2, 24)));
        assert_eq!(parse("1.5s"), Ok(LabelDelay::Seconds(1.5, 1.5)));
        assert_eq!(parse("5..30s"), Ok(LabelDelay::Seconds(5.0, 30.0)));
        assert_eq!(parse("5s..30s"), Ok(LabelDelay::Seconds(5.0, 30.0)));
        assert!(parse("soon").unwrap_err().contains("30s"));
        assert!(parse("30..5s").unwrap_err().contains("earliest first"));
    }

    #[test]
    fn frauds_fall_anywhere_in_the_window_and_the_rest_at_its_end() {
        let window = LabelDelay::Steps(2, 24);
        assert_eq!(window.of(false, 0.3), 24.0);
        assert_eq!(window.of(true, 0.0), 2.0);
        let delays: Vec<f64> = (0..1000)
            .map(|i| window.of(true, window_fraction(&format!("t-{i}"))))
            .collect();
        assert!(delays.iter().all(|d| (2.0..24.0).contains(d)));
        let early = delays.iter().filter(|d| **d < 13.0).count();
        assert!(
            (400..600).contains(&early),
            "spread evenly: {early} of 1000 early"
        );
        assert_eq!(window_fraction("t-7"), window_fraction("t-7"));
    }

    #[test]
    fn replay_clock_keeps_counting_across_passes() {
        let mut clock = ReplayClock::default();
        let first_pass: Vec<i32> = [670, 670, 700, 743]
            .iter()
            .map(|&s| clock.step(s))
            .collect();
        assert_eq!(first_pass, [670, 670, 700, 743]);
        clock.next_pass();
        // The file spans steps 670..=743 (74 steps): the second pass starts at 744.
        assert_eq!(clock.step(670), 744);
        assert_eq!(clock.step(743), 817);
        assert_eq!(clock.elapsed_steps(817), 147);
        clock.next_pass();
        assert_eq!(clock.step(670), 818);
    }
}
