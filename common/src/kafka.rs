//! Kafka client configuration shared by every service, and topic creation.
//!
//! Security settings (SASL, TLS, ...) are not modelled: any librdkafka property passes through with
//! `-X key=value` or `KAFKA_CONFIG="k=v,k=v"`, so the same binaries run against Redpanda Cloud or
//! Confluent Cloud.

use crate::{CommonError, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Where Kafka is and how to talk to it. Flatten into a service's clap arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port, comma separated).
    #[arg(
        long = "brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:29092"
    )]
    pub brokers: String,
    /// Schema registry URL (Confluent API). For Apicurio, append /apis/ccompat/v7.
    #[arg(
        long = "schema-registry",
        env = "SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:28081/apis/ccompat/v7"
    )]
    pub schema_registry: String,
    /// Extra librdkafka properties, e.g. -X security.protocol=SASL_SSL -X sasl.mechanism=PLAIN.
    /// Repeatable; from the environment as KAFKA_CONFIG="k=v,k=v".
    #[arg(
        short = 'X',
        value_name = "KEY=VALUE",
        env = "KAFKA_CONFIG",
        value_delimiter = ','
    )]
    pub extra: Vec<String>,
}

impl KafkaArgs {
    /// Args pointing at `brokers` and `registry` with no extra properties (tests, tools).
    pub fn new(brokers: &str, registry: &str) -> Self {
        KafkaArgs {
            brokers: brokers.into(),
            schema_registry: registry.into(),
            extra: Vec::new(),
        }
    }

    /// A librdkafka config with the brokers and every `-X` property applied.
    pub fn client_config(&self) -> Result<ClientConfig> {
        self.client_config_with(&[])
    }

    /// Like [`KafkaArgs::client_config`], with a service's own `defaults` applied first, so that
    /// a user's `-X` can still override any of them.
    pub fn client_config_with(&self, defaults: &[(&str, &str)]) -> Result<ClientConfig> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            cfg.set(*k, *v);
        }
        for kv in &self.extra {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                CommonError::KafkaConfig(format!(
                    "-X {kv:?} is not KEY=VALUE (example: -X security.protocol=SASL_SSL)"
                ))
            })?;
            cfg.set(k.trim(), v.trim());
        }
        Ok(cfg)
    }

    /// An admin client on the same cluster.
    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        Ok(self.client_config()?.create()?)
    }

    /// A consumer for [`read_partition_range`]: assign-mode, committed data only, nothing
    /// committed back; `group_id` only names it to the broker.
    pub fn range_reader(&self, group_id: &str) -> Result<rdkafka::consumer::BaseConsumer> {
        Ok(self
            .client_config_with(&[
                ("group.id", group_id),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                // A range ends at a record boundary we know: do not sit in a 500 ms long poll.
                ("fetch.wait.max.ms", "10"),
            ])?
            .create()?)
    }
}

/// A topic the project needs, with the settings it must have.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub config: Vec<(String, String)>,
}

impl TopicSpec {
    pub fn new(name: &str, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            config: Vec::new(),
        }
    }

    /// Log compaction: only the newest value per key is kept (the `models` topic).
    pub fn compacted(mut self) -> Self {
        self.config
            .push(("cleanup.policy".into(), "compact".into()));
        self
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }
}

/// Creates the topics that do not exist yet; existing topics are left as they are.
pub async fn ensure_topics(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[TopicSpec],
    replication: i32,
) -> Result<()> {
    let new: Vec<NewTopic> = specs
        .iter()
        .map(|s| {
            let mut t = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(replication));
            for (k, v) in &s.config {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(CommonError::TopicCreation {
                    topic,
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Reads `partition` of `topic` from offset `from` up to (not including) `end` with `reader`, an
/// assign-mode consumer, and hands every message to `each`. Aborted transactions and control
/// records leave gaps in the offsets, so the range also ends once the consumer's position has
/// passed `end`. Gives up after `timeout`.
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
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        let Some(m) = reader.poll(Duration::from_millis(100)) else {
            let position = reader
                .position()?
                .find_partition(topic, partition)
                .and_then(|e| e.offset().to_raw());
            if position.is_some_and(|p| p >= end) {
                break;
            }
            continue;
        };
        // A broker restart or leader change shows up as errors here: wait them out until the
        // deadline rather than fail a whole state rebuild.
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(topic, partition, error = %e, "reading a partition range; retrying");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if m.partition() != partition {
            continue; // fetched for an earlier assignment of a reused reader
        }
        if m.offset() >= end {
            break;
        }
        each(&m);
        if m.offset() + 1 >= end {
            break;
        }
    }
    Ok(())
}

/// Consumer settings for services that read whole topics as fast as they can (scorer, sink):
/// large fetches per partition, and a deep prefetch queue. librdkafka's queue
/// (`queued.max.messages.kbytes`, 64 MiB by default) bounds the memory this costs; lower it with
/// `-X queued.max.messages.kbytes=...` on a small machine.
pub const BULK_FETCH: &[(&str, &str)] = &[
    ("fetch.max.bytes", "67108864"),
    ("max.partition.fetch.bytes", "8388608"),
    ("queued.min.messages", "1000000"),
];

/// Waits (in 1 ms polls) until every message `producer` has queued is delivered or failed, at
/// most `timeout`.
///
/// Why not `flush`: rust-rdkafka's `BaseProducer::flush` polls in 100 ms steps, and
/// `commit_transaction` flushes first, so every Kafka transaction cost at least 100 ms. Draining
/// here first leaves the commit nothing to wait for (measured: commit ~100 ms → ~1-2 ms).
pub fn drain<C: rdkafka::producer::ProducerContext>(
    producer: &rdkafka::producer::BaseProducer<C>,
    timeout: Duration,
) {
    use rdkafka::producer::Producer;
    let deadline = std::time::Instant::now() + timeout;
    while producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
        producer.poll(Duration::from_millis(1));
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
