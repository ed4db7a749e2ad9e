//! The scorer's Kafka transaction: outputs and input offsets committed together, the open
//! transaction committed before partitions are revoked, and aborted when the loop fails.

use crate::metrics::ScorerMetrics;
use crate::resume::CommittedByUs;
use crate::watchdog;
use crate::ScorerError;
use fraudstream_common::kafka::{drain, lag_from_statistics, push};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Producer settings; `-X` overrides any of them.
pub(crate) const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
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

/// The open Kafka transaction, shared with the rebalance callback.
pub(crate) struct Txn {
    pub(crate) producer: BaseProducer,
    /// The producer's settings (with the transactional.id), to start a new one after fencing.
    config: rdkafka::ClientConfig,
    pub(crate) open: bool,
    /// Next offset to commit per input partition.
    pub(crate) offsets: HashMap<i32, i64>,
    /// What this process's committed transactions committed: a floor under the group's answers.
    pub(crate) committed: CommittedByUs,
    pub(crate) opened_at: Instant,
    /// Outputs were sent since the last [`Txn::push_lingering`]: librdkafka may hold them back
    /// for `linger.ms`.
    pub(crate) lingering: bool,
}

impl Txn {
    /// A producer under our transactional.id, ready for transactions. Initialising fences any
    /// older producer with the same id and completes (aborts) its open transaction.
    pub(crate) fn new(config: rdkafka::ClientConfig) -> Result<Self, ScorerError> {
        let producer: BaseProducer = config.create()?;
        producer.init_transactions(Duration::from_secs(30))?;
        Ok(Txn {
            producer,
            config,
            open: false,
            offsets: HashMap::new(),
            committed: CommittedByUs::default(),
            opened_at: Instant::now(),
            lingering: false,
        })
    }

    pub(crate) fn begin(&mut self) -> Result<(), ScorerError> {
        if !self.open {
            self.producer.begin_transaction()?;
            self.open = true;
            self.opened_at = Instant::now();
        }
        Ok(())
    }

    /// Light traffic (the loop has caught up with its input): sends at once the outputs that
    /// would wait out `linger.ms`, so that they are acknowledged while the transaction waits for
    /// `min_commit_interval`, not during its commit, when nothing is polled or sent. Side by side
    /// at 5k and 20k tx/s (medians of 3 runs), the commit's drain fell from 3.7-4.0 to 1.7-2.0 ms
    /// and the end-to-end p50 from 18-19 to 15 ms (README, "Latency"). `linger.ms=0` shortens the
    /// drain as much but costs ~10% of the full-load rate; a loop that has not caught up never
    /// pushes, and its batches fill as before.
    pub(crate) fn push_lingering(&mut self) {
        if self.open && self.lingering {
            push(&self.producer);
            self.lingering = false;
        }
    }

    /// Commits outputs and offsets together. On failure the transaction is aborted, and the result
    /// says whether it held offsets: then the consumer must go back to the committed ones.
    pub(crate) fn commit(
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
        self.lingering = false;
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
                metrics
                    .drain_seconds
                    .observe(started.elapsed().as_secs_f64());
                let started = Instant::now();
                let sent = if offsets.is_empty() {
                    Ok(())
                } else {
                    watchdog::watched(timeout, || {
                        self.producer
                            .send_offsets_to_transaction(&tpl, &gm, timeout)
                    })
                };
                metrics
                    .offsets_seconds
                    .observe(started.elapsed().as_secs_f64());
                let started = Instant::now();
                let committed = sent.and_then(|_| {
                    watchdog::watched(timeout, || self.producer.commit_transaction(timeout))
                });
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
                self.committed.record(&offsets);
                Ok(false)
            }
            Err(e) => {
                tracing::warn!(error = %e, "commit failed; aborting the transaction and redoing its work");
                let aborted =
                    watchdog::watched(timeout, || self.producer.abort_transaction(timeout));
                if let Err(abort) = aborted {
                    // Fenced: a broker outage outlasted transaction.timeout.ms, so the coordinator
                    // aborted the transaction itself and bumped the producer epoch. The outputs are
                    // aborted either way; carry on with a new producer, from the committed offsets.
                    tracing::warn!(error = %abort, "the transaction could not be aborted; starting a new producer");
                    let committed = std::mem::take(&mut self.committed);
                    *self = Txn::new(self.config.clone()).map_err(|new| {
                        ScorerError::Transaction(Box::new(crate::TransactionFailure {
                            commit: e,
                            abort,
                            new_producer: Box::new(new),
                        }))
                    })?;
                    self.committed = committed;
                }
                metrics.txn_aborted.inc();
                Ok(!offsets.is_empty())
            }
        }
    }
}

/// Consumer callbacks: commit the open transaction before partitions are revoked.
pub(crate) struct ScorerContext {
    pub(crate) txn: Arc<Mutex<Txn>>,
    pub(crate) topic: String,
    pub(crate) metrics: Arc<ScorerMetrics>,
    pub(crate) fatal: Arc<Mutex<Option<ScorerError>>>,
    /// Bumped on every revocation and assignment: records polled before are dropped.
    pub(crate) generation: Arc<AtomicU64>,
}

impl ClientContext for ScorerContext {
    /// A partition without a valid position is the loop's to handle (`Engine::back_to_committed`):
    /// librdkafka's reason is worth a line, not an error; a first start has one per partition.
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AutoOffsetReset)
                if reason.contains("no previously committed") =>
            {
                tracing::info!(target: "librdkafka", "{reason}")
            }
            Some(RDKafkaErrorCode::AutoOffsetReset) => {
                tracing::warn!(target: "librdkafka", "{reason}")
            }
            _ => tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}"),
        }
    }

    /// Lag from the statistics librdkafka hands over during `poll` (`statistics.interval.ms`).
    fn stats(&self, stats: rdkafka::Statistics) {
        for (topic, partition, lag) in lag_from_statistics(&stats) {
            if topic == self.topic {
                self.metrics
                    .consumer_lag
                    .with_label_values(&[&partition.to_string()])
                    .set(lag);
            }
        }
    }
}
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
                *self.fatal.lock().unwrap() = Some(e);
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

/// Aborts the open transaction when the scoring loop exits with an error.
///
/// Without it, dropping the consumer closes it, the close revokes the partitions, and the revoke
/// callback commits the open transaction, whose offsets may already cover the record that was
/// being processed when the error came: that record would be skipped for good (a real loss seen in
/// the broker-restart fault scenario). On a clean exit the transaction is already committed and
/// this does nothing.
pub(crate) struct AbortOnExit(pub(crate) Arc<Mutex<Txn>>);

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
