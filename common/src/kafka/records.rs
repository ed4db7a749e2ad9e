//! Reading and writing records as the services need: a partition range read back, producing
//! through a full queue, draining before a commit, the lag from librdkafka's statistics, and the
//! headers of a dead letter.

use crate::Result;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Reads `partition` of `topic` from offset `from` up to (not including) `end` with `reader`, an
/// assign-mode consumer, and hands every message to `each`. Aborted transactions and control
/// records leave gaps in the offsets, so the range also ends once the consumer's position has
/// passed `end`. A range not read to its end within `timeout` is an error
/// ([`CommonError::RangeIncomplete`](crate::CommonError::RangeIncomplete)), never a short read:
/// callers rebuild state or write dead letters from it, and a silent gap would be lost data.
pub fn read_partition_range(
    reader: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    end: i64,
    timeout: Duration,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<()> {
    use rdkafka::consumer::Consumer;
    use rdkafka::Message;
    if from >= end {
        return Ok(());
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(from))?;
    reader.assign(&tpl)?;
    let started = std::time::Instant::now();
    let mut reached = from;
    let mut errors = ErrorLog::default();
    while started.elapsed() < timeout {
        let Some(m) = reader.poll(Duration::from_millis(100)) else {
            let position = reader
                .position()?
                .find_partition(topic, partition)
                .and_then(|e| e.offset().to_raw());
            if let Some(p) = position {
                reached = reached.max(p);
            }
            if reached >= end {
                return Ok(());
            }
            continue;
        };
        // A broker restart or leader change shows up as errors here, and a reader left idle
        // through an outage holds one queued per failed connection attempt (hundreds): they are
        // taken as fast as they come, not slept on, and the read goes on until the deadline.
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                errors.saw(topic, partition, &e);
                continue;
            }
        };
        if m.partition() != partition {
            continue; // fetched for an earlier assignment of a reused reader
        }
        if m.offset() >= end {
            return Ok(());
        }
        each(&m);
        reached = m.offset() + 1;
        if reached >= end {
            return Ok(());
        }
    }
    Err(crate::CommonError::RangeIncomplete {
        topic: topic.to_string(),
        partition,
        from,
        end,
        reached,
        seconds: timeout.as_secs(),
        last_error: errors
            .last
            .unwrap_or_else(|| "none: no records came".into()),
    })
}

/// The errors of one range read: the last kept for the final error, a warning at most once
/// every 5 s.
#[derive(Default)]
struct ErrorLog {
    last: Option<String>,
    warned: Option<std::time::Instant>,
    since_warned: u64,
}

impl ErrorLog {
    fn saw(&mut self, topic: &str, partition: i32, e: &rdkafka::error::KafkaError) {
        self.last = Some(e.to_string());
        self.since_warned += 1;
        if self
            .warned
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            tracing::warn!(topic, partition, error = %e, errors = self.since_warned, "reading a partition range; going on");
            self.warned = Some(std::time::Instant::now());
            self.since_warned = 0;
        }
    }
}

/// The low and high watermarks of `partition` of `topic`. A broker that has just restarted takes
/// its partitions' leadership back one by one (seconds with thousands of partitions), and
/// answers "not leader" until then: such answers are waited out for up to a minute instead of
/// failing a state rebuild or a read of a whole topic.
pub fn watermarks<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl rdkafka::consumer::Consumer<C>,
    topic: &str,
    partition: i32,
) -> std::result::Result<(i64, i64), rdkafka::error::KafkaError> {
    asking_again(
        &format!("reading the watermarks of {topic} [{partition}]"),
        || consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)),
        is_transient,
    )
}

/// The group's committed offsets of `partitions`. A partition's answer can carry an error instead
/// of an offset: its coordinator still loading the group after a restart, or a transaction's
/// offsets not settled yet (`UNSTABLE_OFFSET_COMMIT`). Read as "never committed", that would send
/// a consumer back to the start of the partition and process it all again; so until every
/// partition has a real answer the question is asked again, for up to a minute, and then the
/// error is returned.
pub fn committed_offsets_settled<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl rdkafka::consumer::Consumer<C>,
    partitions: &rdkafka::TopicPartitionList,
) -> std::result::Result<rdkafka::TopicPartitionList, rdkafka::error::KafkaError> {
    let ask = || {
        let committed = consumer.committed_offsets(partitions.clone(), Duration::from_secs(10))?;
        let unsettled = committed.elements().iter().find_map(|e| e.error().err());
        unsettled.map_or(Ok(committed), Err)
    };
    asking_again("reading committed offsets", ask, |_| true)
}

/// `ask()` until it succeeds or fails with an error `retry` does not accept, asking again every
/// 250 ms for up to a minute; then its last answer.
fn asking_again<T>(
    what: &str,
    mut ask: impl FnMut() -> std::result::Result<T, rdkafka::error::KafkaError>,
    retry: impl Fn(&rdkafka::error::KafkaError) -> bool,
) -> std::result::Result<T, rdkafka::error::KafkaError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match ask() {
            Err(e) if retry(&e) && std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "{what}: not available yet; asking again");
                std::thread::sleep(Duration::from_millis(250));
            }
            answer => return answer,
        }
    }
}

/// Errors a partition's leadership moving (or a broker coming back) gives for a while.
fn is_transient(e: &rdkafka::error::KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(
            NotLeaderForPartition
                | LeaderNotAvailable
                | FencedLeaderEpoch
                | UnknownLeaderEpoch
                | OffsetNotAvailable
                | RequestTimedOut
                | OperationTimedOut
                | BrokerTransportFailure
                | AllBrokersDown
        )
    )
}

/// Consumer settings for services that read whole topics as fast as they can (scorer, sink),
/// besides the queue sizes of [`super::MemoryArgs::consumer`].
pub const BULK_FETCH: &[(&str, &str)] = &[LAG_STATS];

/// librdkafka statistics every 5 s, for [`lag_from_statistics`]. Part of [`BULK_FETCH`].
pub const LAG_STATS: (&str, &str) = ("statistics.interval.ms", "5000");

/// Each consumed partition's lag (records between the application's position and the end of the
/// partition) from librdkafka's statistics, which a consumer context receives during `poll`. No
/// request goes to the broker, so reporting lag never stalls the thread that polls (fetching
/// watermarks did, up to a second per partition while a broker was in trouble).
pub fn lag_from_statistics(stats: &rdkafka::Statistics) -> Vec<(&str, i32, i64)> {
    let mut lags = Vec::new();
    for (topic, t) in &stats.topics {
        for (id, p) in &t.partitions {
            let position = if p.app_offset >= 0 {
                p.app_offset
            } else {
                p.committed_offset
            };
            // -1 is librdkafka's internal partition; "none" one not consumed by this client.
            if *id < 0 || p.fetch_state == "none" || position < 0 || p.hi_offset < 0 {
                continue;
            }
            lags.push((topic.as_str(), *id, (p.hi_offset - position).max(0)));
        }
    }
    lags
}

/// Waits until every message `producer` has queued is delivered or failed, at most `timeout`,
/// sending at once what waits for `linger.ms`.
///
/// Why not `flush`: rust-rdkafka's `BaseProducer::flush` polls in 100 ms steps, and
/// `commit_transaction` flushes first, so every Kafka transaction cost at least 100 ms. Draining
/// here first leaves the commit nothing to wait for (measured: commit ~100 ms → ~1-2 ms).
///
/// Why librdkafka's flush, 1 ms at a time (see [`push`]): linger.ms is skipped only while a flush
/// is under way, so a plain poll loop waited out the linger of the last batches. Through the
/// scorer, drain + offsets per commit fell from 18-25 ms to 8-10 ms, and the end-to-end p50 / p99
/// from 41-57 / 99-139 ms to 25-28 / 63-79 ms at 5k tx/s, and from 42-46 / 93-129 to 28-29 /
/// 75-82 ms at 20k (side by side, 2-3 runs each).
pub fn drain<C: rdkafka::producer::ProducerContext>(
    producer: &rdkafka::producer::BaseProducer<C>,
    timeout: Duration,
) {
    use rdkafka::producer::Producer;
    let deadline = std::time::Instant::now() + timeout;
    while producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
        push(producer);
    }
}

/// Sends now what `producer` holds back for `linger.ms`, and serves the delivery reports that
/// have come in; takes about 1 ms.
pub fn push<C: rdkafka::producer::ProducerContext>(producer: &rdkafka::producer::BaseProducer<C>) {
    use rdkafka::producer::Producer;
    // Wakes the broker threads and holds the flush for 1 ms, long enough for them to send every
    // batch they can now (again each turn: a batch waiting for a free in-flight request goes as
    // soon as one is free). It cannot return sooner: a message counts as queued until its
    // delivery report is served, which is done next.
    // SAFETY: the pointer is the producer's own handle, alive as long as `producer`.
    unsafe { rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), 1) };
    let mut left = i32::MAX;
    while producer.in_flight_count() < left {
        left = producer.in_flight_count();
        producer.poll(Duration::ZERO);
    }
}

/// Sends `record`, waiting for room while librdkafka's queue is full: a producer that outruns the
/// broker waits, it does not fail.
pub fn send_retrying<K, P>(
    producer: &rdkafka::producer::BaseProducer,
    mut record: rdkafka::producer::BaseRecord<'_, K, P>,
) -> rdkafka::error::KafkaResult<()>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    use rdkafka::error::KafkaError;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Where a dead letter came from and why: what [`dead_letter_headers`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterSource {
    pub error: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl DeadLetterSource {
    /// Reads the headers back; `None` when one is missing or not a number where one is due (a
    /// record that was not written by a fraudstream service).
    pub fn from_headers<H: rdkafka::message::Headers>(headers: &H) -> Option<Self> {
        let get = |key: &str| {
            headers
                .iter()
                .find(|h| h.key == key)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        Some(DeadLetterSource {
            error: get("error").unwrap_or_default(),
            topic: get("source.topic")?,
            partition: get("source.partition")?.parse().ok()?,
            offset: get("source.offset")?.parse().ok()?,
        })
    }
}

/// The headers every dead letter carries: why it was refused and where it came from, so it can be
/// found, fixed and replayed (`kcat -C -t <dlq> -f '%h\n'` shows them).
pub fn dead_letter_headers(
    reason: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::{Header, OwnedHeaders};
    let (partition, offset) = (partition.to_string(), offset.to_string());
    OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "error",
            value: Some(reason),
        })
        .insert(Header {
            key: "source.topic",
            value: Some(topic),
        })
        .insert(Header {
            key: "source.partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "source.offset",
            value: Some(&offset),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_headers_read_back() {
        let h = dead_letter_headers("bad magic byte", "transactions", 3, 42);
        let source = DeadLetterSource::from_headers(&h).unwrap();
        assert_eq!(
            source,
            DeadLetterSource {
                error: "bad magic byte".into(),
                topic: "transactions".into(),
                partition: 3,
                offset: 42,
            }
        );
        let partial = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "source.topic",
            value: Some("transactions"),
        });
        assert_eq!(DeadLetterSource::from_headers(&partial), None);
    }
}
