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
        let Some(m) = reader.poll(Duration::from_millis(500)) else {
            let position = reader
                .position()?
                .find_partition(topic, partition)
                .and_then(|e| e.offset().to_raw());
            if position.is_some_and(|p| p >= end) {
                break;
            }
            continue;
        };
        let m = m?;
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
