//! Topic creation: what the project's topics must be, created once and waited for until the
//! broker's metadata shows them.

use crate::{CommonError, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// The replication factor that asks the broker for its default (KIP-464).
const BROKER_DEFAULT: i32 = -1;

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

/// Creates the topics that do not exist yet; existing topics are left as they are. Replication
/// is the cluster's `default.replication.factor`: 1 on a single broker, 3 on a cluster set up
/// for it, where `min.insync.replicas` then keeps an acknowledged record on two brokers.
pub async fn ensure_topics(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[TopicSpec],
) -> Result<()> {
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let mut t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(BROKER_DEFAULT),
            );
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
    wait_until_visible(admin, specs).await
}

/// Waits until the broker's metadata shows every topic with its partitions. A created topic
/// reaches the broker's metadata cache a moment after CreateTopics returns, and a consumer that
/// subscribes in that moment sees "unknown topic" and only looks again at its next metadata
/// refresh (5 minutes by default): a sink started next to the producer idled that long.
async fn wait_until_visible(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[TopicSpec],
) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for spec in specs {
        loop {
            let metadata = admin
                .inner()
                .fetch_metadata(Some(&spec.name), Duration::from_secs(5))?;
            let visible = metadata
                .topics()
                .iter()
                .any(|t| t.error().is_none() && !t.partitions().is_empty());
            if visible {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(CommonError::TopicCreation {
                    topic: spec.name.clone(),
                    message: "created, but not in the broker's metadata after 30 s".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
