//! The writing half of the sink: a batch into ClickHouse's three tables (or BigQuery), its dead
//! letters to the DLQ, then its Kafka offsets, retried with backoff while the destination fails
//! (offsets stay uncommitted meanwhile, so nothing is lost and a restart writes the batch again).

use crate::metrics::SinkMetrics;
use crate::rows::{LabelRow, PredictionRow, TransactionRow};
use crate::{SinkConfig, SinkContext, SinkError};
use fraudstream_common::kafka::{dead_letter_headers, read_partition_range};
use fraudstream_common::server::Health;
use fraudstream_common::trace;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
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
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) transactions: Vec<TransactionRow>,
    pub(crate) predictions: Vec<PredictionRow>,
    pub(crate) labels: Vec<LabelRow>,
    pub(crate) dead_letters: Vec<DeadLetter>,
    /// Next offset to commit per (topic, partition).
    pub(crate) offsets: HashMap<(String, i32), i64>,
    /// First offset read per (topic, partition): with `offsets`, the records the batch holds.
    pub(crate) first: HashMap<(String, i32), i64>,
    pub(crate) bytes: usize,
    pub(crate) started: Option<Instant>,
    /// (topic, traceparent) of the sampled records that carry a trace.
    pub(crate) traced: Vec<(String, String)>,
}

impl Batch {
    pub(crate) fn rows(&self) -> usize {
        self.transactions.len() + self.predictions.len() + self.labels.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

/// Writes batches: ClickHouse (and BigQuery), then the DLQ, then the Kafka offsets.
pub(crate) struct Writer {
    pub(crate) cfg: SinkConfig,
    pub(crate) target: Target,
    pub(crate) consumer: Arc<StreamConsumer<SinkContext>>,
    pub(crate) dlq: FutureProducer,
    pub(crate) metrics: Arc<SinkMetrics>,
    pub(crate) health: Arc<Health>,
    pub(crate) stop: watch::Receiver<bool>,
}

/// One batch into ClickHouse's three tables.
async fn insert_clickhouse(client: &clickhouse::Client, batch: &Batch) -> Result<(), SinkError> {
    insert_rows(client, "transactions", &batch.transactions).await?;
    insert_rows(client, "predictions", &batch.predictions).await?;
    insert_rows(client, "labels", &batch.labels).await
}

impl Writer {
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
        match &self.target {
            Target::ClickHouse(client) => {
                let written = self
                    .until_ok("ClickHouse", batch.rows(), || {
                        insert_clickhouse(client, &batch)
                    })
                    .await;
                match written {
                    Ok(()) => {
                        self.metrics.clickhouse_up.set(1);
                        self.send_dead_letters(&batch.dead_letters).await?;
                    }
                    Err(e) if e.is_permanent() => {
                        self.send_dead_letters(&batch.dead_letters).await?;
                        self.dead_letter_batch(&batch, &e).await?;
                        self.commit(&batch.offsets).await;
                        return Ok(0);
                    }
                    Err(e) => return Err(e),
                }
            }
            #[cfg(feature = "bigquery")]
            Target::BigQuery(bq) => {
                self.until_ok("BigQuery", batch.predictions.len(), || {
                    bq.insert_predictions(&batch.predictions)
                })
                .await?;
            }
        }
        self.metrics
            .insert_seconds
            .observe(started.elapsed().as_secs_f64());
        self.commit(&batch.offsets).await;
        let rows = batch.rows() as u64;
        self.metrics.batches.inc();
        for (table, n) in [
            ("transactions", batch.transactions.len()),
            ("predictions", batch.predictions.len()),
            ("labels", batch.labels.len()),
        ] {
            self.metrics
                .rows_inserted
                .with_label_values(&[table])
                .inc_by(n as u64);
        }
        Ok(rows)
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
    async fn dead_letter_batch(&self, batch: &Batch, e: &SinkError) -> Result<(), SinkError> {
        tracing::error!(error = %e, rows = batch.rows(), "ClickHouse refused the batch for good; its records go to the DLQ (replay them once the table is fixed)");
        let ranges: Vec<(String, i32, i64, i64)> = batch
            .offsets
            .iter()
            .map(|((t, p), end)| (t.clone(), *p, batch.first[&(t.clone(), *p)], *end))
            .collect();
        let own: std::collections::HashSet<(String, i32, i64)> = batch
            .dead_letters
            .iter()
            .map(|d| (d.topic.clone(), d.partition, d.offset))
            .collect();
        let kafka = self.cfg.kafka.clone();
        let reason = format!("ClickHouse refused the batch: {e}");
        let records = tokio::task::spawn_blocking(move || read_back(&kafka, &ranges, &reason))
            .await
            .map_err(|e| SinkError::Writer(e.to_string()))??;
        let letters: Vec<DeadLetter> = records
            .into_iter()
            .filter(|d| !own.contains(&(d.topic.clone(), d.partition, d.offset)))
            .collect();
        self.send_dead_letters(&letters).await
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
    async fn commit(&self, offsets: &HashMap<(String, i32), i64>) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in offsets {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
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

/// One RowBinary insert of `rows` into `table` (nothing when empty).
async fn insert_rows<R>(
    client: &clickhouse::Client,
    table: &str,
    rows: &[R],
) -> Result<(), SinkError>
where
    R: clickhouse::RowOwned + clickhouse::RowWrite,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<R>(table).await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await?;
    Ok(())
}

/// The records `from..end` of each (topic, partition), as dead letters with `reason`.
fn read_back(
    kafka: &fraudstream_common::kafka::KafkaArgs,
    ranges: &[(String, i32, i64, i64)],
    reason: &str,
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
                    reason: reason.to_string(),
                })
            },
        )?;
    }
    Ok(letters)
}
