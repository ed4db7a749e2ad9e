//! The sink: lands `transactions`, `predictions` and `labels` in ClickHouse, exactly once as a
//! reader of the tables sees them.
//!
//! Delivery: at-least-once into ReplacingMergeTree tables keyed by transaction id, which makes it
//! exactly-once for `FINAL` reads. Kafka offsets are committed only after ClickHouse acknowledged
//! every row before them, so a crash anywhere re-reads and re-inserts (deduplicated), never skips.
//! When ClickHouse is down or refuses a batch, the sink retries with backoff and keeps its consumer
//! in the group with its partitions paused; nothing is dropped.
//!
//! Throughput and memory: each record's row is streamed, as it is decoded, into one open
//! RowBinary INSERT per table (sent in 256 KiB chunks), so a batch costs a few chunks of memory,
//! not its rows. A batch ends by rows, bytes or age; its INSERTs are then finished by the writer
//! while the next batch streams. Commits stay in order: a batch is handed to the writer only after
//! the previous one was inserted and committed. A stream that fails is inserted again from the
//! batch's records in Kafka.

pub mod metrics;
pub mod rows;
mod stream;
mod writer;

use stream::Decoded;
use writer::{Batch, DeadLetter, Target, Writer};

#[cfg(feature = "bigquery")]
pub mod bigquery;

use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::kafka::{
    ensure_topics, lag_from_statistics, with_sized, KafkaArgs, TopicSpec, BULK_FETCH,
};
use fraudstream_common::registry_wait::RegistryWait;
use fraudstream_common::server::Health;
use fraudstream_common::trace;
use fraudstream_common::CommonError;
use fraudstream_schemas::{topics, Codec, Label, Prediction, SchemaError, Transaction};
use futures::{FutureExt, StreamExt};
use metrics::SinkMetrics;
use rdkafka::consumer::{Consumer, MessageStream, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Errors that stop the sink. ClickHouse being down is not one of them: that is retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Common(#[from] CommonError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("BigQuery: {0}")]
    BigQuery(String),
    #[error("stopped while a batch was still being written (it is read again on restart)")]
    Stopped,
    #[error("the batch writer task failed: {0}")]
    Writer(String),
}

/// ClickHouse error codes that say the rows do not fit the table: no retry changes that (a
/// column dropped or retyped under the sink, a value out of the column's range, input the server
/// cannot parse). Everything else (network, timeouts, memory, too many parts, a login or a table
/// being fixed) is retried. See `ErrorCodes.cpp` in ClickHouse for the numbers.
const PERMANENT_CLICKHOUSE_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    8,   // THERE_IS_NO_COLUMN
    10,  // NOT_FOUND_COLUMN_IN_BLOCK
    16,  // NO_SUCH_COLUMN_IN_TABLE
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    44,  // ILLEGAL_COLUMN
    47,  // UNKNOWN_IDENTIFIER
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349, // CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
];

impl SinkError {
    /// True when ClickHouse refused the rows for a reason a retry cannot change (see
    /// [`PERMANENT_CLICKHOUSE_CODES`]): the batch is dead-lettered instead of retried for ever.
    pub fn is_permanent(&self) -> bool {
        use clickhouse::error::Error;
        match self {
            SinkError::ClickHouse(Error::BadResponse(message)) => clickhouse_code(message)
                .is_some_and(|code| PERMANENT_CLICKHOUSE_CODES.contains(&code)),
            SinkError::ClickHouse(Error::SchemaMismatch(_) | Error::Custom(_)) => true,
            _ => false,
        }
    }
}

/// The number in a ClickHouse exception ("Code: 16. DB::Exception: ...").
fn clickhouse_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + "Code: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Everything the sink needs: its flags (each also an environment variable).
#[derive(Debug, Clone, clap::Args)]
pub struct SinkConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// Consumer group shared by all sink instances.
    #[arg(long, env = "FRAUDSTREAM_SINK_GROUP", default_value = "sink")]
    pub group: String,
    #[arg(long, env = "FRAUDSTREAM_TRANSACTIONS_TOPIC", default_value = topics::TRANSACTIONS)]
    pub transactions_topic: String,
    #[arg(long, env = "FRAUDSTREAM_PREDICTIONS_TOPIC", default_value = topics::PREDICTIONS)]
    pub predictions_topic: String,
    #[arg(long, env = "FRAUDSTREAM_LABELS_TOPIC", default_value = topics::LABELS)]
    pub labels_topic: String,
    /// Where undecodable records go, with the reason and their origin in headers.
    #[arg(long, env = "FRAUDSTREAM_SINK_DLQ_TOPIC", default_value = topics::PREDICTIONS_DLQ)]
    pub dlq_topic: String,
    #[command(flatten)]
    pub memory: fraudstream_common::kafka::MemoryArgs,
    /// Write a batch once it holds this many rows...
    #[arg(long, env = "FRAUDSTREAM_BATCH_ROWS", default_value_t = 200_000)]
    pub batch_rows: usize,
    /// ...or this many MiB of Kafka payload...
    #[arg(long = "batch-mib", value_name = "BATCH_MIB", env = "FRAUDSTREAM_BATCH_MIB", default_value = "64",
          value_parser = fraudstream_common::args::mebibytes)]
    pub batch_bytes: usize,
    /// ...or once its first row is this many milliseconds old (bounds the delay to ClickHouse).
    #[arg(long = "batch-ms", value_name = "BATCH_MS", env = "FRAUDSTREAM_BATCH_MS", default_value = "1000",
          value_parser = fraudstream_common::args::millis)]
    pub batch_age: Duration,
    /// Longest wait between insert attempts while ClickHouse fails (ms); backoff doubles up to it.
    #[arg(long = "max-backoff-ms", value_name = "MAX_BACKOFF_MS", env = "FRAUDSTREAM_MAX_BACKOFF_MS", default_value = "5000",
          value_parser = fraudstream_common::args::millis)]
    pub max_backoff: Duration,
    /// Partitions of the topics the sink creates if they are missing (inputs and DLQ).
    #[arg(long, env = "FRAUDSTREAM_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,
    /// Stop cleanly once this many rows were read, after writing and committing them (benchmarks).
    #[arg(long, hide = true)]
    pub stop_after: Option<u64>,
    /// Where the rows go. Each destination is its own consumer group with its own offsets.
    #[arg(skip = Destination::ClickHouse)]
    pub destination: Destination,
}

/// Where one sink loop writes. `sink --bigquery` runs two loops, one per destination, each in its
/// own consumer group (`<group>` and `<group>-bigquery`) committing its own offsets: a BigQuery
/// outage or expired credential only holds back BigQuery, never ClickHouse.
#[derive(Debug, Clone)]
pub enum Destination {
    /// transactions, predictions and labels into ClickHouse; bad records to the dead-letter topic.
    ClickHouse,
    /// predictions only, into BigQuery (the ClickHouse loop dead-letters bad records).
    #[cfg(feature = "bigquery")]
    BigQuery(bigquery::BigQueryConfig),
}

/// Counts of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkSummary {
    pub rows: u64,
    pub batches: u64,
    pub dead_letters: u64,
    pub retries: u64,
    /// From the first record read to the last commit.
    pub busy: Duration,
}

impl SinkSummary {
    pub fn rate(&self) -> f64 {
        self.rows as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

/// Consumer settings; `-X` overrides any of them.
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("isolation.level", "read_committed"),
    ("auto.offset.reset", "earliest"),
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "1000"),
    // Also the member's rebalance timeout: how long the coordinator holds a rejoin waiting for the
    // group's other members. After a broker restart the sink's session had expired on its side,
    // and its rejoin was held for the whole 300 s default (the JoinGroup timed out in flight 5
    // minutes later; the sink read nothing meanwhile, in the 200k broker-restart fault run). The
    // loop goes on polling while a write waits (paused: see `PAUSE_AFTER`), so a live sink does
    // not reach 30 s; a ClickHouse outage leaves it in the group (clickhouse-down-20s).
    ("max.poll.interval.ms", "30000"),
    // librdkafka keeps one fetch in flight per broker. While the predictions' partitions wait for
    // room in the prefetch queue, the next fetch asks only for partitions with nothing new (the
    // labels, a caught-up partition), and the broker holds it for the whole wait: at librdkafka's
    // 500 ms default that stalled a 200k-row batch by ~0.5 s in four runs of ten.
    ("fetch.wait.max.ms", "20"),
];

/// How long a batch waits for the previous one's write, still reading, before fetching pauses.
/// A write takes 0.1–0.3 s; pausing for each cost ~0.5 s more, as librdkafka drops what it had
/// prefetched and fetches it again after the resume (a 200k-row batch took 0.6–0.8 s instead of
/// 0.2). Rows read meanwhile join the batch being handed over, which grows by at most this long's
/// reading.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// The consumer's messages, one stream for the whole run.
type Records<'a> = MessageStream<'a, SinkContext>;

/// Records taken in one go once one has arrived (see `Sink::take_ready`): enough to make the
/// per-wakeup cost small, few enough that a stop or a batch's age is noticed within ~10 ms.
const READY_BURST: usize = 4096;

/// Consumer callbacks: the lag from librdkafka's statistics (no request to the broker).
pub(crate) struct SinkContext {
    metrics: Arc<SinkMetrics>,
}

impl rdkafka::ClientContext for SinkContext {
    fn stats(&self, stats: rdkafka::Statistics) {
        for (topic, partition, lag) in lag_from_statistics(&stats) {
            self.metrics
                .consumer_lag
                .with_label_values(&[topic, &partition.to_string()])
                .set(lag);
        }
    }
}

impl rdkafka::consumer::ConsumerContext for SinkContext {}

/// The sink while it runs: the consumer, the batch being filled and the one being written.
struct Sink {
    cfg: SinkConfig,
    consumer: Arc<StreamConsumer<SinkContext>>,
    codec: Arc<Codec>,
    registry: RegistryWait,
    writer: Arc<Writer>,
    metrics: Arc<SinkMetrics>,
    batch: Batch,
    inflight: Option<JoinHandle<Result<u64, SinkError>>>,
    summary: SinkSummary,
    first_record: Option<Instant>,
    /// Rows decoded since the start, written or not (for `stop_after`).
    rows_read: u64,
    /// `records_in` per topic, looked up once (a label lookup hashes the name).
    records_in: Vec<(String, prometheus::IntCounter)>,
}

/// Applies the ClickHouse migrations, then consumes until `stop` turns true (flushing and
/// committing what was read) or `stop_after` rows were read (then written and committed).
pub async fn run(
    cfg: SinkConfig,
    metrics: Arc<SinkMetrics>,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> Result<SinkSummary, SinkError> {
    let (target, topics) = match &cfg.destination {
        Destination::ClickHouse => {
            health.set_unready("applying ClickHouse migrations");
            migrate_with_retry(&cfg.clickhouse, &health, &metrics, stop.clone()).await?;
            let topics = vec![
                cfg.transactions_topic.as_str(),
                cfg.predictions_topic.as_str(),
                cfg.labels_topic.as_str(),
            ];
            (Target::ClickHouse(cfg.clickhouse.client()), topics)
        }
        #[cfg(feature = "bigquery")]
        Destination::BigQuery(bq) => (
            Target::BigQuery(bigquery::BigQuery::connect(bq.clone()).await?),
            vec![cfg.predictions_topic.as_str()],
        ),
    };
    // The inputs too: a consumer subscribed to a topic that does not exist yet only notices it
    // at the next metadata refresh (minutes), so a sink started before the producer would idle.
    ensure_topics(
        &cfg.kafka.admin()?,
        &[
            TopicSpec::new(&cfg.transactions_topic, cfg.partitions),
            TopicSpec::new(&cfg.predictions_topic, cfg.partitions),
            TopicSpec::new(&cfg.labels_topic, cfg.partitions),
            TopicSpec::new(&cfg.dlq_topic, cfg.partitions),
        ],
    )
    .await?;
    let consumer: Arc<StreamConsumer<SinkContext>> = Arc::new(
        cfg.kafka
            .client_config_with(&with_sized(
                &[CONSUMER_DEFAULTS, BULK_FETCH].concat(),
                &cfg.memory.consumer(10_000),
            ))?
            .set("group.id", &cfg.group)
            .create_with_context(SinkContext {
                metrics: metrics.clone(),
            })?,
    );
    consumer.subscribe(&topics)?;
    let dlq: FutureProducer = cfg
        .kafka
        .client_config_with(&[("enable.idempotence", "true"), ("linger.ms", "5")])?
        .create()?;
    let codec = Arc::new(cfg.kafka.codec()?);
    let writer = Arc::new(Writer {
        target,
        codec: codec.clone(),
        consumer: consumer.clone(),
        dlq,
        metrics: metrics.clone(),
        health: health.clone(),
        stop: stop.clone(),
        cfg: cfg.clone(),
    });
    health.set_ready("consuming");
    let mut sink = Sink {
        batch: writer.new_batch(),
        codec,
        registry: RegistryWait::new(metrics.registry_up.clone(), health, cfg.max_backoff),
        cfg,
        consumer,
        writer,
        metrics,
        inflight: None,
        summary: SinkSummary::default(),
        first_record: None,
        rows_read: 0,
        records_in: Vec::new(),
    };
    sink.consume(stop).await
}

/// ClickHouse may still be starting (compose, CI): wait for it instead of failing.
async fn migrate_with_retry(
    ch: &ClickHouseArgs,
    health: &Health,
    metrics: &SinkMetrics,
    stop: watch::Receiver<bool>,
) -> Result<(), SinkError> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match ch.migrate().await {
            Ok(applied) => {
                if !applied.is_empty() {
                    tracing::info!(?applied, database = %ch.database, "ClickHouse tables created or upgraded");
                }
                return Ok(());
            }
            Err(e) => {
                metrics.clickhouse_up.set(0);
                health.set_unready(format!("ClickHouse at {}: {e}", ch.url));
                tracing::warn!(url = %ch.url, error = %e, "ClickHouse not ready; retrying");
                if *stop.borrow() {
                    return Err(SinkError::Stopped);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn split_millis(ms: i64) -> (u32, u16) {
    let ms = ms.max(0);
    ((ms / 1000) as u32, (ms % 1000) as u16)
}

impl Sink {
    async fn consume(&mut self, mut stop: watch::Receiver<bool>) -> Result<SinkSummary, SinkError> {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let stop_after = self.cfg.stop_after.unwrap_or(u64::MAX);
        let consumer = self.consumer.clone();
        // One stream for the whole run: `recv()` makes (and registers a waker for) a new one
        // per record.
        let mut records = consumer.stream();
        while !*stop.borrow() && self.summary.rows < stop_after {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                m = records.next() => {
                    let first = m.expect("Kafka streams never end");
                    if self.take_ready(first, &mut records, stop_after).await? {
                        break;
                    }
                }
                _ = tick.tick() => {
                    if self.batch.started.is_some_and(|s| s.elapsed() >= self.cfg.batch_age) {
                        self.hand_over(&mut records).await?;
                    }
                    // A finished write is collected here, so `stop_after` sees its rows.
                    if self.inflight.as_ref().is_some_and(|h| h.is_finished()) {
                        self.wait_for_writer(&mut records).await?;
                    }
                }
            }
        }
        // Clean stop: write and commit what was read.
        self.hand_over(&mut records).await?;
        self.wait_for_writer(&mut records).await?;
        self.summary.busy = self.first_record.map(|f| f.elapsed()).unwrap_or_default();
        tracing::info!(summary = ?self.summary, "sink stopped");
        Ok(self.summary.clone())
    }

    /// Adds `first` and then the records already fetched, up to [`READY_BURST`], without going
    /// round the `select!` for each (a stop future, a timer poll and a waker per record were a
    /// tenth of the sink's CPU). True once `stop_after` records are read.
    async fn take_ready(
        &mut self,
        first: KafkaResult<BorrowedMessage<'_>>,
        records: &mut MessageStream<'_, SinkContext>,
        stop_after: u64,
    ) -> Result<bool, SinkError> {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(m) = next.take() {
            match m {
                Ok(m) => self.add(&m).await,
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            }
            if self.batch.rows() >= self.cfg.batch_rows || self.batch.bytes >= self.cfg.batch_bytes
            {
                self.hand_over(records).await?;
            }
            // A bench's finite stream: write the tail now rather than when it is `batch_age`
            // old, as no more rows will come.
            if self.rows_read >= stop_after {
                return Ok(true);
            }
            taken += 1;
            if taken < READY_BURST {
                next = records.next().now_or_never().flatten();
            }
        }
        Ok(false)
    }

    /// Decodes one record into the batch (or the batch's dead letters).
    async fn add(&mut self, m: &BorrowedMessage<'_>) {
        self.first_record.get_or_insert_with(Instant::now);
        let payload = m.payload().unwrap_or_default();
        let topic = m.topic();
        // Decoded before the record joins the batch: while the registry is unavailable the
        // record waits here (and a stop leaves it uncommitted, to be read again).
        let decoded = if payload.is_empty() {
            Err("empty payload (tombstone)".to_string())
        } else if topic == self.cfg.predictions_topic {
            self.decode_waiting::<Prediction>(payload)
                .await
                .map(Decoded::Prediction)
        } else if topic == self.cfg.transactions_topic {
            self.decode_waiting::<Transaction>(payload)
                .await
                .map(Decoded::Transaction)
        } else {
            self.decode_waiting::<Label>(payload)
                .await
                .map(Decoded::Label)
        };
        if matches!(decoded, Err(ref r) if r == STOPPED) {
            return;
        }
        self.records_in(topic).inc();
        let b = &mut self.batch;
        b.started.get_or_insert_with(Instant::now);
        b.extend_range(topic, m.partition(), m.offset());
        b.bytes += payload.len();
        if trace::exporting() {
            if let Some(tp) = trace::from_headers(m.headers()) {
                b.traced.push((topic.to_string(), tp));
            }
        }
        let result = match decoded {
            Ok(d) => {
                b.rows.push(d, m.partition(), m.offset()).await;
                Ok(())
            }
            Err(reason) => Err(reason),
        };
        self.rows_read += result.is_ok() as u64;
        if let Err(reason) = result {
            tracing::warn!(topic, partition = m.partition(), offset = m.offset(), %reason, "undecodable record to the DLQ");
            b.dead_letters.push(DeadLetter {
                topic: topic.to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                reason,
            });
        }
    }

    fn records_in(&mut self, topic: &str) -> &prometheus::IntCounter {
        let i = match self.records_in.iter().position(|(t, _)| t == topic) {
            Some(i) => i,
            None => {
                let counter = self.metrics.records_in.with_label_values(&[topic]);
                self.records_in.push((topic.to_string(), counter));
                self.records_in.len() - 1
            }
        };
        &self.records_in[i].1
    }

    /// Gives the batch to the writer once the previous one is written and committed.
    async fn hand_over(&mut self, records: &mut Records<'_>) -> Result<(), SinkError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.wait_for_writer(records).await?;
        let batch = std::mem::replace(&mut self.batch, self.writer.new_batch());
        tracing::debug!(rows = batch.rows(), "batch handed to the writer");
        self.summary.dead_letters += batch.dead_letters.len() as u64;
        let writer = self.writer.clone();
        self.inflight = Some(tokio::spawn(async move { writer.write(batch).await }));
        Ok(())
    }

    /// Waits for the batch being written, still reading (into the batch being handed over).
    /// A write that takes longer than [`PAUSE_AFTER`] (ClickHouse slow or down) pauses fetching,
    /// so that the batch stops growing, while the consumer keeps serving the group (a long
    /// outage does not cost the sink its partitions).
    async fn wait_for_writer(&mut self, records: &mut Records<'_>) -> Result<(), SinkError> {
        let Some(mut handle) = self.inflight.take() else {
            return Ok(());
        };
        let result = if handle.is_finished() {
            handle.await
        } else if let Some(r) = self
            .read_until(&mut handle, Some(PAUSE_AFTER), records)
            .await
        {
            r
        } else {
            let consumer = self.consumer.clone();
            let assignment = consumer.assignment()?;
            consumer.pause(&assignment)?;
            self.metrics.paused.set(1);
            let result = self
                .read_until(&mut handle, None, records)
                .await
                .expect("no deadline");
            // All of them, even those revoked in the meantime: librdkafka keeps a partition's
            // pause across a revoke and a later assignment, so one revoked now (a session timeout
            // during a broker restart) and handed back after this point would never be fetched
            // again. Resuming a partition we no longer hold only clears that flag.
            consumer.resume(&assignment)?;
            self.metrics.paused.set(0);
            result
        };
        let rows = result.map_err(|e| SinkError::Writer(e.to_string()))??;
        self.summary.rows += rows;
        self.summary.batches += 1;
        self.summary.retries = self.metrics.retries.get();
        Ok(())
    }

    /// Adds what the consumer delivers to the batch until `write` ends (its result) or `limit`
    /// passes (None), taking what is already fetched in bursts as [`Sink::take_ready`] does.
    async fn read_until(
        &mut self,
        write: &mut JoinHandle<Result<u64, SinkError>>,
        limit: Option<Duration>,
        records: &mut Records<'_>,
    ) -> Option<Result<Result<u64, SinkError>, tokio::task::JoinError>> {
        let deadline = async {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                r = &mut *write => return Some(r),
                _ = &mut deadline => return None,
                m = records.next() => {
                    let mut next = m;
                    let mut taken = 0;
                    while let Some(m) = next.take() {
                        match m {
                            Ok(m) => self.add(&m).await,
                            Err(e) => tracing::warn!(error = %e, "consumer error"),
                        }
                        taken += 1;
                        if taken < READY_BURST {
                            next = records.next().now_or_never().flatten();
                        }
                    }
                }
            }
        }
    }
}

/// `payload` decoded for the table of `topic` (the writer's path, when it reads a batch again).
async fn decode_for(
    codec: &Codec,
    cfg: &SinkConfig,
    topic: &str,
    payload: &[u8],
) -> Result<Decoded, SchemaError> {
    Ok(if topic == cfg.predictions_topic {
        Decoded::Prediction(codec.decode(payload).await?)
    } else if topic == cfg.transactions_topic {
        Decoded::Transaction(codec.decode(payload).await?)
    } else {
        Decoded::Label(codec.decode(payload).await?)
    })
}

/// The reason [`Sink::decode_waiting`] gives when the sink stopped during a registry outage.
const STOPPED: &str = "stopped while the schema registry was unavailable";

impl Sink {
    /// Decodes `payload`; while the registry cannot answer, waits and retries (see
    /// [`RegistryWait`]) instead of dead-lettering a record that has nothing wrong with it. Any
    /// other failure is the record's: its reason.
    async fn decode_waiting<T: fraudstream_schemas::AvroRecord>(
        &self,
        payload: &[u8],
    ) -> Result<T, String> {
        // The hot path: a writer schema already known needs no registry, and no outage
        // bookkeeping (a lock) per record.
        if let Some(decoded) = self.codec.decode_cached(payload) {
            return decoded.map_err(|e| e.to_string());
        }
        let stop = &self.writer.stop;
        self.registry
            .retry(|| *stop.borrow(), || self.codec.decode::<T>(payload))
            .await
            .map_err(|e| {
                if e.is_registry_unavailable() {
                    STOPPED.to_string()
                } else {
                    e.to_string()
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(message: &str) -> SinkError {
        SinkError::ClickHouse(clickhouse::error::Error::BadResponse(message.into()))
    }

    #[test]
    fn rows_that_do_not_fit_the_table_are_permanent_the_rest_is_retried() {
        let dropped = "Code: 16. DB::Exception: No such column scored_ms in table db.predictions. (NO_SUCH_COLUMN_IN_TABLE) (version 25.8.1.1)";
        assert!(server(dropped).is_permanent());
        assert!(server("Code: 53. DB::Exception: Type mismatch").is_permanent());
        for transient in [
            "Code: 241. DB::Exception: Memory limit (total) exceeded",
            "Code: 252. DB::Exception: Too many parts (300)",
            "Code: 60. DB::Exception: Table db.predictions does not exist",
            "Code: 516. DB::Exception: fraudstream: Authentication failed",
            "<html>502 Bad Gateway</html>",
        ] {
            assert!(!server(transient).is_permanent(), "{transient}");
        }
        assert!(!SinkError::ClickHouse(clickhouse::error::Error::TimedOut).is_permanent());
        assert!(!SinkError::Stopped.is_permanent());
    }
}
