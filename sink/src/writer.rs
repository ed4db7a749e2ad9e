//! The writing half of the sink: a batch into ClickHouse's three tables (or BigQuery), its dead
//! letters to the DLQ, then its Kafka offsets, retried with backoff while the destination fails
//! (offsets stay uncommitted meanwhile, so nothing is lost and a restart writes the batch again).

use crate::metrics::SinkMetrics;
use crate::stream::{Rows, Streams};
use crate::{decode_for, SinkConfig, SinkContext, SinkError};
use fraudstream_common::kafka::{dead_letter_headers, read_partition_range};
use fraudstream_common::server::Health;
use fraudstream_common::trace;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The writing end of a [`Destination`].
pub(crate) enum Target {
    ClickHouse(clickhouse::Client),
    #[cfg(feature = "bigquery")]
    BigQuery(crate::bigquery::BigQuery),
}

/// A record that could not be decoded, on its way to the DLQ.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) reason: String,
}

/// Rows read since the last hand-over to the writer, and the offsets they cover.
pub(crate) struct Batch {
    pub(crate) rows: Rows,
    pub(crate) dead_letters: Vec<DeadLetter>,
    /// (topic, partition, first offset read, next offset to commit): the records the batch
    /// holds. A handful of partitions, so a list beats a map keyed by an owned topic name.
    pub(crate) ranges: Vec<Range>,
    pub(crate) bytes: usize,
    pub(crate) started: Option<Instant>,
    /// (topic, traceparent) of the sampled records that carry a trace.
    pub(crate) traced: Vec<(String, String)>,
}

/// (topic, partition, first offset, end offset) of what a batch read.
type Range = (String, i32, i64, i64);

impl Batch {
    pub(crate) fn new(rows: Rows) -> Self {
        Batch {
            rows,
            dead_letters: Vec::new(),
            ranges: Vec::new(),
            bytes: 0,
            started: None,
            traced: Vec::new(),
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows.counts().iter().sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Records that the batch holds the record at `offset` of (`topic`, `partition`).
    pub(crate) fn extend_range(&mut self, topic: &str, partition: i32, offset: i64) {
        match self
            .ranges
            .iter_mut()
            .find(|r| r.1 == partition && r.0 == topic)
        {
            Some(r) => r.3 = offset + 1,
            None => self
                .ranges
                .push((topic.to_string(), partition, offset, offset + 1)),
        }
    }

    /// The records dead-lettered for their own fault, by (topic, partition, offset).
    fn own_dead_letters(&self) -> HashSet<(String, i32, i64)> {
        self.dead_letters
            .iter()
            .map(|d| (d.topic.clone(), d.partition, d.offset))
            .collect()
    }
}

/// Writes batches: ClickHouse (and BigQuery), then the DLQ, then the Kafka offsets.
pub(crate) struct Writer {
    pub(crate) cfg: SinkConfig,
    pub(crate) target: Target,
    pub(crate) consumer: Arc<StreamConsumer<SinkContext>>,
    pub(crate) dlq: FutureProducer,
    pub(crate) codec: Arc<fraudstream_schemas::Codec>,
    pub(crate) metrics: Arc<SinkMetrics>,
    pub(crate) health: Arc<Health>,
    pub(crate) stop: watch::Receiver<bool>,
}

impl Writer {
    /// An empty batch for this writer's destination.
    pub(crate) fn new_batch(&self) -> Batch {
        Batch::new(match &self.target {
            Target::ClickHouse(client) => Rows::ClickHouse(Box::new(Streams::new(client.clone()))),
            #[cfg(feature = "bigquery")]
            Target::BigQuery(_) => Rows::BigQuery(Vec::new()),
        })
    }

    /// Inserts the batch (retrying until it succeeds, the sink stops, or ClickHouse refuses it
    /// for good: then its records are dead-lettered), dead-letters its undecodable records, then
    /// commits its offsets. Returns the rows inserted.
    #[tracing::instrument(name = "write_batch", skip_all, fields(rows = batch.rows()))]
    pub(crate) async fn write(&self, batch: Batch) -> Result<u64, SinkError> {
        let started = Instant::now();
        // Open until the batch is committed: the last span of each sampled record's trace.
        let _landing: Vec<tracing::Span> = batch
            .traced
            .iter()
            .map(|(topic, tp)| {
                let span = tracing::info_span!("land_record", topic = %topic, rows = batch.rows());
                trace::follow(&span, tp);
                span
            })
            .collect();
        let counts = batch.rows.counts();
        let own = batch.own_dead_letters();
        let ranges = batch.ranges;
        match (&self.target, batch.rows) {
            (Target::ClickHouse(client), Rows::ClickHouse(streams)) => {
                // The streamed INSERTs first; after a failure, the batch again from Kafka.
                let mut streamed = Some(streams);
                let written = self
                    .until_ok("ClickHouse", counts.iter().sum(), || {
                        let first = streamed.take();
                        let (ranges, own) = (&ranges, &own);
                        async move {
                            match first {
                                Some(s) => Ok(s.end().await?),
                                None => self.reinsert(client, ranges, own).await,
                            }
                        }
                    })
                    .await;
                match written {
                    Ok(()) => {
                        self.metrics.clickhouse_up.set(1);
                        self.send_dead_letters(&batch.dead_letters).await?;
                    }
                    Err(e) if e.is_permanent() => {
                        self.send_dead_letters(&batch.dead_letters).await?;
                        self.dead_letter_batch(&ranges, &own, &e).await?;
                        self.commit(&ranges).await;
                        return Ok(0);
                    }
                    Err(e) => return Err(e),
                }
            }
            #[cfg(feature = "bigquery")]
            (Target::BigQuery(bq), Rows::BigQuery(predictions)) => {
                self.until_ok("BigQuery", predictions.len(), || {
                    bq.insert_predictions(&predictions)
                })
                .await?;
            }
            #[cfg(feature = "bigquery")]
            _ => unreachable!("a batch's rows are made for its writer's target"),
        }
        self.metrics
            .insert_seconds
            .observe(started.elapsed().as_secs_f64());
        self.commit(&ranges).await;
        tracing::debug!(
            ?counts,
            seconds = started.elapsed().as_secs_f64(),
            "batch inserted and committed"
        );
        self.metrics.batches.inc();
        for (table, n) in ["transactions", "predictions", "labels"]
            .into_iter()
            .zip(counts)
        {
            self.metrics
                .rows_inserted
                .with_label_values(&[table])
                .inc_by(n as u64);
        }
        Ok(counts.iter().sum::<usize>() as u64)
    }

    /// Calls `attempt` until it succeeds, backing off up to `max_backoff`, while the sink runs.
    async fn until_ok<F, Fut>(
        &self,
        destination: &str,
        rows: usize,
        mut attempt: F,
    ) -> Result<(), SinkError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), SinkError>>,
    {
        let mut backoff = Duration::from_millis(250);
        let mut failed = false;
        loop {
            match attempt().await {
                Err(e) if e.is_permanent() => return Err(e),
                Ok(()) => {
                    if failed {
                        tracing::info!(destination, "inserts accepted again");
                        self.health.set_ready("consuming");
                    }
                    return Ok(());
                }
                Err(e) => {
                    failed = true;
                    self.metrics.retries.inc();
                    if destination == "ClickHouse" {
                        self.metrics.clickhouse_up.set(0);
                    }
                    self.health
                        .set_unready(format!("{destination} insert failing, retrying: {e}"));
                    tracing::warn!(destination, error = %e, rows, backoff_ms = backoff.as_millis() as u64, "insert failed; retrying (offsets stay uncommitted)");
                    if *self.stop.borrow() {
                        return Err(SinkError::Stopped);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                }
            }
        }
    }

    /// ClickHouse refused the batch for good ([`SinkError::is_permanent`]): its records go to
    /// the DLQ with the refusal as their reason, read back from Kafka (the batch holds rows, not
    /// records), and the offsets are committed as for a written batch. Once the table is fixed,
    /// `producer replay-dlq` sends them back. Records already dead-lettered for their own fault
    /// keep that reason.
    async fn dead_letter_batch(
        &self,
        ranges: &[Range],
        own: &HashSet<(String, i32, i64)>,
        e: &SinkError,
    ) -> Result<(), SinkError> {
        let rows: i64 = ranges.iter().map(|r| r.3 - r.2).sum();
        tracing::error!(error = %e, records = rows, "ClickHouse refused the batch for good; its records go to the DLQ (replay them once the table is fixed)");
        let reason = format!("ClickHouse refused the batch: {e}");
        let letters = self
            .read_back(ranges, own)
            .await?
            .into_iter()
            .map(|d| DeadLetter {
                reason: reason.clone(),
                ..d
            })
            .collect::<Vec<_>>();
        self.send_dead_letters(&letters).await
    }

    /// The batch inserted again from its records in Kafka, after its streamed INSERT failed. Its
    /// records are held in memory meanwhile (at most `--batch-mib`).
    async fn reinsert(
        &self,
        client: &clickhouse::Client,
        ranges: &[Range],
        own: &HashSet<(String, i32, i64)>,
    ) -> Result<(), SinkError> {
        let mut streams = Streams::new(client.clone());
        for r in self.read_back(ranges, own).await? {
            let payload = r.payload.as_deref().unwrap_or_default();
            match decode_for(&self.codec, &self.cfg, &r.topic, payload).await {
                Ok(d) => streams.push(d, r.partition, r.offset).await,
                Err(e) => {
                    tracing::warn!(topic = r.topic, partition = r.partition, offset = r.offset, error = %e, "record read again does not decode; skipped")
                }
            }
        }
        Ok(streams.end().await?)
    }

    /// The records of `ranges` from Kafka, less those already dead-lettered for their own fault.
    async fn read_back(
        &self,
        ranges: &[Range],
        own: &HashSet<(String, i32, i64)>,
    ) -> Result<Vec<DeadLetter>, SinkError> {
        let kafka = self.cfg.kafka.clone();
        let ranges = ranges.to_vec();
        let records = tokio::task::spawn_blocking(move || read_back(&kafka, &ranges))
            .await
            .map_err(|e| SinkError::Writer(e.to_string()))??;
        Ok(records
            .into_iter()
            .filter(|d| !own.contains(&(d.topic.clone(), d.partition, d.offset)))
            .collect())
    }

    async fn send_dead_letters(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        let mut pending = Vec::with_capacity(letters.len());
        for d in letters {
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.cfg.dlq_topic).headers(
                dead_letter_headers(&d.reason, &d.topic, d.partition, d.offset),
            );
            if let Some(k) = &d.key {
                record = record.key(k);
            }
            if let Some(p) = &d.payload {
                record = record.payload(p);
            }
            pending.push(self.dlq.send(record, Duration::from_secs(60)));
        }
        for r in futures::future::join_all(pending).await {
            r.map_err(|(e, _)| e)?;
            self.metrics.dlq.inc();
        }
        Ok(())
    }

    /// A failed commit is not fatal: the rows are in ClickHouse, and whoever reads the partition
    /// next re-inserts them, which the tables deduplicate.
    async fn commit(&self, ranges: &[Range]) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, _, end) in ranges {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*end));
        }
        let consumer = self.consumer.clone();
        let result =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.metrics.commit_failures.inc();
                tracing::warn!(error = %e, "offset commit failed after a successful insert; the rows will be re-read and deduplicated");
            }
            Err(e) => tracing::error!(error = %e, "offset commit task failed"),
        }
    }
}

/// The records `from..end` of each (topic, partition), as dead letters without a reason yet.
fn read_back(
    kafka: &fraudstream_common::kafka::KafkaArgs,
    ranges: &[Range],
) -> Result<Vec<DeadLetter>, SinkError> {
    use rdkafka::Message;
    let reader = kafka.range_reader("sink-dead-letter-batch")?;
    let mut letters = Vec::new();
    for (topic, partition, from, end) in ranges {
        read_partition_range(
            &reader,
            topic,
            *partition,
            *from,
            *end,
            Duration::from_secs(120),
            |m| {
                letters.push(DeadLetter {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    reason: String::new(),
                })
            },
        )?;
    }
    Ok(letters)
}
