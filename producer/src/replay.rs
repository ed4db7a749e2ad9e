//! `producer replay-dlq`: sends dead-lettered records back to the topic they came from, once the
//! cause is fixed (a schema registered again, a bug in a consumer fixed and deployed).
//!
//! Exactly once per source record, across runs and crashes: every re-published record and a
//! ledger entry keyed by its source coordinates (`topic/partition/offset`, from the `source.*`
//! headers) are written in one Kafka transaction, and records already in the ledger are skipped.
//! The key is the *source* record, not the dead letter, because one bad transaction is
//! dead-lettered twice (by the scorer and by the sink, which both read the transactions topic):
//! replaying both dead-letter topics still sends it back once. Two runs at the same time share a
//! transactional id, so the second fences the first before it reads the ledger.

use fraudstream_common::kafka::{
    ensure_topics, read_partition_range, send_retrying, DeadLetterSource, KafkaArgs, TopicSpec,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// The compacted topic that remembers what was replayed (one per cluster is enough).
pub const DEFAULT_LEDGER: &str = "dlq-replayed";

/// Which dead letters to replay; every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// A substring of the `error` header.
    pub error: Option<String>,
    /// Dead-lettered at or after / before these times (ms since the epoch).
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// A partition of the dead-letter topic and an offset range in it (inclusive).
    pub partition: Option<i32>,
    pub from_offset: Option<i64>,
    pub to_offset: Option<i64>,
    /// At most this many records are replayed.
    pub limit: Option<u64>,
}

impl Filter {
    fn admits(&self, m: &BorrowedMessage<'_>, source: &DeadLetterSource) -> bool {
        let time = m.timestamp().to_millis().unwrap_or(0);
        self.error.as_ref().is_none_or(|e| source.error.contains(e))
            && self.since_ms.is_none_or(|t| time >= t)
            && self.until_ms.is_none_or(|t| time < t)
    }
}

pub struct ReplayConfig {
    pub kafka: KafkaArgs,
    pub dlq_topic: String,
    pub ledger_topic: String,
    pub filter: Filter,
    /// Print what would be sent; send nothing, write no ledger entry.
    pub dry_run: bool,
    /// Records per Kafka transaction.
    pub batch: usize,
}

/// What a run did (or, in a dry run, would do).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayReport {
    /// Dead letters read in the chosen offset range.
    pub read: u64,
    pub replayed: u64,
    pub already_replayed: u64,
    pub filtered_out: u64,
    /// Without the `source.*` headers: nowhere to send them (not written by fraudstream).
    pub no_source: u64,
    /// Replayed records per target topic and per error.
    pub by_target: BTreeMap<String, u64>,
    pub by_error: BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Common(#[from] fraudstream_common::CommonError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(
        "dead-letter topic {0} does not exist (check --dlq-topic; `kcat -L` lists the topics)"
    )]
    NoSuchTopic(String),
}

/// One line of the dry run.
pub fn describe(dlq: &BorrowedMessage<'_>, source: &DeadLetterSource) -> String {
    format!(
        "{}[{}]@{} -> {} (from {}[{}]@{}, key {}, {} bytes): {}",
        dlq.topic(),
        dlq.partition(),
        dlq.offset(),
        source.topic,
        source.topic,
        source.partition,
        source.offset,
        dlq.key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_else(|| "none".into()),
        dlq.payload().map_or(0, <[u8]>::len),
        source.error
    )
}

/// Replays `cfg.dlq_topic` up to its end at start; `total` is told the number of dead letters in
/// range, `progress` each one read, `dry_run_line` each one that would be sent.
pub async fn replay(
    cfg: &ReplayConfig,
    total: impl FnOnce(u64),
    mut progress: impl FnMut(u64),
    mut dry_run_line: impl FnMut(String),
) -> Result<ReplayReport, ReplayError> {
    let producer = if cfg.dry_run {
        None
    } else {
        ensure_topics(
            &cfg.kafka.admin()?,
            &[TopicSpec::new(&cfg.ledger_topic, 1).compacted()],
        )
        .await?;
        Some(transactional_producer(cfg)?)
    };
    let reader: BaseConsumer = cfg
        .kafka
        .client_config_with(&[
            ("group.id", "fraudstream-dlq-replay"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
        ])?
        .create()?;
    // Read after init_transactions: a run fenced by this one has finished or aborted by now.
    let replayed = read_ledger(&reader, &cfg.ledger_topic)?;
    let ranges = dlq_ranges(&reader, cfg)?;
    total(
        ranges
            .iter()
            .map(|(_, from, end)| (end - from).max(0) as u64)
            .sum(),
    );
    let mut run = Run {
        cfg,
        producer,
        replayed,
        report: ReplayReport::default(),
        in_txn: 0,
        failure: None,
    };
    for (partition, from, end) in ranges {
        read_partition_range(
            &reader,
            &cfg.dlq_topic,
            partition,
            from,
            end,
            Duration::from_secs(120),
            |m| {
                run.report.read += 1;
                progress(run.report.read);
                run.take(m, &mut dry_run_line);
            },
        )?;
    }
    if let Some(e) = run.failure {
        return Err(e);
    }
    if let Some(p) = &run.producer {
        if run.in_txn > 0 {
            p.commit_transaction(Duration::from_secs(60))?;
        }
    }
    Ok(run.report)
}

/// One replay in progress.
struct Run<'a> {
    cfg: &'a ReplayConfig,
    /// None in a dry run.
    producer: Option<BaseProducer>,
    /// Source records replayed: the ledger, plus this run's.
    replayed: HashSet<String>,
    report: ReplayReport,
    /// Records in the open transaction.
    in_txn: usize,
    /// The first send or commit that failed: the run stops there.
    failure: Option<ReplayError>,
}

impl Run<'_> {
    /// Replays one dead letter (or says it would), unless a filter, the ledger or the limit
    /// says otherwise.
    fn take(&mut self, m: &BorrowedMessage<'_>, dry_run_line: &mut impl FnMut(String)) {
        let filter = &self.cfg.filter;
        if self.failure.is_some() || filter.limit.is_some_and(|l| self.report.replayed >= l) {
            return;
        }
        let Some(source) = m.headers().and_then(DeadLetterSource::from_headers) else {
            self.report.no_source += 1;
            return;
        };
        if !filter.admits(m, &source) {
            self.report.filtered_out += 1;
            return;
        }
        let key = ledger_key(&source);
        if self.replayed.contains(&key) {
            self.report.already_replayed += 1;
            return;
        }
        match &self.producer {
            None => dry_run_line(describe(m, &source)),
            Some(p) => {
                if let Err(e) = send_back(p, self.cfg, m, &source, &key, &mut self.in_txn) {
                    self.failure = Some(e);
                    return;
                }
            }
        }
        self.replayed.insert(key);
        let r = &mut self.report;
        r.replayed += 1;
        *r.by_target.entry(source.topic.clone()).or_default() += 1;
        *r.by_error.entry(source.error).or_default() += 1;
    }
}

fn transactional_producer(cfg: &ReplayConfig) -> Result<BaseProducer, ReplayError> {
    let producer: BaseProducer = cfg
        .kafka
        .client_config_with(&[("linger.ms", "5")])?
        .set(
            "transactional.id",
            format!("fraudstream-dlq-replay-{}", cfg.ledger_topic),
        )
        .create()?;
    producer.init_transactions(Duration::from_secs(60))?;
    Ok(producer)
}

fn ledger_key(source: &DeadLetterSource) -> String {
    format!("{}/{}/{}", source.topic, source.partition, source.offset)
}

/// The source records already replayed (keys of the ledger, read to its end).
fn read_ledger(reader: &BaseConsumer, ledger: &str) -> Result<HashSet<String>, ReplayError> {
    let mut keys = HashSet::new();
    for (partition, from, end) in partition_ranges(reader, ledger, None)? {
        read_partition_range(
            reader,
            ledger,
            partition,
            from,
            end,
            Duration::from_secs(120),
            |m| {
                if let Some(k) = m.key() {
                    keys.insert(String::from_utf8_lossy(k).into_owned());
                }
            },
        )?;
    }
    Ok(keys)
}

/// Per partition of the dead-letter topic: the offsets to read, `from..end`.
fn dlq_ranges(
    reader: &BaseConsumer,
    cfg: &ReplayConfig,
) -> Result<Vec<(i32, i64, i64)>, ReplayError> {
    let ranges = partition_ranges(reader, &cfg.dlq_topic, cfg.filter.partition)?;
    if ranges.is_empty() && cfg.filter.partition.is_none() {
        return Err(ReplayError::NoSuchTopic(cfg.dlq_topic.clone()));
    }
    let f = &cfg.filter;
    Ok(ranges
        .into_iter()
        .map(|(p, low, high)| {
            let from = f.from_offset.map_or(low, |o| o.max(low));
            let end = f.to_offset.map_or(high, |o| (o + 1).min(high));
            (p, from, end)
        })
        .collect())
}

/// `(partition, low, high)` for each partition of `topic` (only `only`, when given); none when
/// the topic does not exist.
fn partition_ranges(
    reader: &BaseConsumer,
    topic: &str,
    only: Option<i32>,
) -> Result<Vec<(i32, i64, i64)>, ReplayError> {
    let metadata = reader.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut ranges = Vec::new();
    for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
        for p in t.partitions() {
            if only.is_some_and(|o| o != p.id()) {
                continue;
            }
            let (low, high) = fraudstream_common::kafka::watermarks(reader, topic, p.id())?;
            ranges.push((p.id(), low, high));
        }
    }
    Ok(ranges)
}

/// The record to its source partition (where its account's other records are: the scorer's
/// per-account state is per partition) with its key, and its ledger entry, in the open transaction; commits every `batch` records.
fn send_back(
    producer: &BaseProducer,
    cfg: &ReplayConfig,
    m: &BorrowedMessage<'_>,
    source: &DeadLetterSource,
    key: &str,
    in_txn: &mut usize,
) -> Result<(), ReplayError> {
    if *in_txn == 0 {
        producer.begin_transaction()?;
    }
    let from = format!("{}/{}/{}", m.topic(), m.partition(), m.offset());
    let headers = OwnedHeaders::new().insert(Header {
        key: "replayed.from",
        value: Some(&from),
    });
    let mut record = BaseRecord::<[u8], [u8]>::to(&source.topic)
        .partition(source.partition)
        .headers(headers);
    if let Some(k) = m.key() {
        record = record.key(k);
    }
    if let Some(p) = m.payload() {
        record = record.payload(p);
    }
    send_retrying(producer, record)?;
    send_retrying(
        producer,
        BaseRecord::<str, str>::to(&cfg.ledger_topic)
            .key(key)
            .payload(&from),
    )?;
    *in_txn += 1;
    if *in_txn >= cfg.batch {
        producer.commit_transaction(Duration::from_secs(60))?;
        *in_txn = 0;
    }
    Ok(())
}

impl ReplayReport {
    /// The summary printed after a run.
    pub fn summary(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would replay" } else { "replayed" };
        let mut out = format!(
            "{} dead letters read: {verb} {}, {} already replayed, {} filtered out, {} without source headers\n",
            self.read, self.replayed, self.already_replayed, self.filtered_out, self.no_source
        );
        for (topic, n) in &self.by_target {
            out.push_str(&format!("  to {topic}: {n}\n"));
        }
        for (error, n) in &self.by_error {
            let short: String = error.chars().take(120).collect();
            out.push_str(&format!("  {n} × {short}\n"));
        }
        out
    }
}
