//! A compacted topic (models, rules) read from the beginning, forever, on a thread of its own: its
//! records go to the scoring thread, which applies them between batches. Reading from the start
//! means the current state is known at start, and every scorer sees the same changes in the same
//! (offset) order.

use fraudstream_common::kafka::KafkaArgs;
use fraudstream_common::registry_wait::RegistryWait;
use fraudstream_schemas::{AvroRecord, Codec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

/// What a watcher tells the scoring thread.
pub enum TopicEvent<T> {
    /// The record at `offset`, keyed by `key`; `None` is a tombstone (a deletion).
    Record {
        key: String,
        value: Option<Box<T>>,
        offset: i64,
    },
    /// A record that does not decode as a `T` at all.
    Undecodable(String),
    /// Everything that was on the topic at start has been delivered.
    CaughtUp,
}

/// How to reach the topic and decode its records.
pub struct Watch {
    pub kafka: KafkaArgs,
    pub topic: String,
    /// The thread's name and consumer group.
    pub name: &'static str,
    pub codec: Arc<Codec>,
    pub registry: Arc<RegistryWait>,
    pub runtime: tokio::runtime::Handle,
    pub stop: Arc<AtomicBool>,
}

/// Reads `watch.topic` from the beginning until `stop`, sending every record to `events`.
pub fn spawn<T: AvroRecord + Send + 'static>(
    watch: Watch,
    events: Sender<TopicEvent<T>>,
) -> Result<std::thread::JoinHandle<()>, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer = watch
        .kafka
        .client_config_with(&[
            ("group.id", watch.name),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
        ])
        .map_err(|e| rdkafka::error::KafkaError::ClientCreation(e.to_string()))?
        .create()?;
    let topic = watch.topic.as_str();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        let (_, high) = fraudstream_common::kafka::watermarks(&consumer, topic, p.id())?;
        ends.push((p.id(), high));
    }
    consumer.assign(&tpl)?;
    Ok(std::thread::Builder::new()
        .name(watch.name.into())
        .spawn(move || {
            let mut caught_up = false;
            while !watch.stop.load(Ordering::Relaxed) {
                if !caught_up && read_to(&consumer, &watch.topic, &ends) {
                    caught_up = true;
                    if events.send(TopicEvent::CaughtUp).is_err() {
                        return;
                    }
                }
                let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let event = match msg {
                    Ok(m) => match decode::<T>(&watch, &m) {
                        Some(event) => event,
                        None => return, // stopping during a registry outage
                    },
                    Err(e) => {
                        tracing::warn!(topic = %watch.topic, error = %e, "reading a compacted topic");
                        continue;
                    }
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        })
        .expect("spawning a topic watcher"))
}

/// The event for one record; `None` when the scorer stopped while the registry was down.
fn decode<T: AvroRecord>(
    watch: &Watch,
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> Option<TopicEvent<T>> {
    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
    let Some(payload) = m.payload() else {
        return Some(TopicEvent::Record {
            key,
            value: None,
            offset: m.offset(),
        });
    };
    // A registry outage delays the record; it does not refuse it.
    let decoded = watch.registry.retry_blocking(
        || watch.stop.load(Ordering::Relaxed),
        || watch.runtime.block_on(watch.codec.decode::<T>(payload)),
    );
    Some(match decoded {
        Ok(r) => TopicEvent::Record {
            key,
            value: Some(Box::new(r)),
            offset: m.offset(),
        },
        Err(e) if e.is_registry_unavailable() => return None,
        Err(e) => TopicEvent::Undecodable(format!(
            "{}[{}]@{}: {e}",
            watch.topic,
            m.partition(),
            m.offset()
        )),
    })
}

/// Whether `consumer` has read every partition of `topic` up to its end at start (`ends`).
fn read_to(consumer: &BaseConsumer, topic: &str, ends: &[(i32, i64)]) -> bool {
    if ends.iter().all(|(_, high)| *high == 0) {
        return true; // an empty topic
    }
    let Ok(position) = consumer.position() else {
        return false;
    };
    ends.iter().all(|(p, high)| {
        *high == 0
            || position
                .find_partition(topic, *p)
                .and_then(|e| e.offset().to_raw())
                .is_some_and(|o| o >= *high)
    })
}
