//! An analyst's verdict becomes a `Label` (source ANALYST) on the labels topic, keyed by the
//! transaction id; the sink lands it and the trainer learns from it like the others. The first
//! verdict on a transaction is the one: a double click, a retry or a second analyst gets the
//! verdict already given, and nothing is published again.

use crate::alerts;
use fraudstream_common::kafka::KafkaArgs;
use fraudstream_schemas::{Codec, Label, LabelSource};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// A verdict given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub is_fraud: bool,
    pub analyst: String,
}

pub struct Verdicts {
    producer: FutureProducer,
    codec: Codec,
    topic: String,
    /// Verdicts given through this process: what the queue hides before the sink lands them,
    /// and what a second click finds. Held while publishing, so two clicks cannot both publish.
    given: Mutex<HashMap<String, Verdict>>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Schema(#[from] fraudstream_schemas::SchemaError),
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error(transparent)]
    Common(#[from] fraudstream_common::CommonError),
}

impl Verdicts {
    pub fn new(kafka: &KafkaArgs, topic: &str) -> Result<Self, VerdictError> {
        Ok(Verdicts {
            producer: kafka
                .client_config_with(&[("enable.idempotence", "true"), ("linger.ms", "0")])?
                .create()?,
            codec: kafka.codec()?,
            topic: topic.to_string(),
            given: Mutex::new(HashMap::new()),
        })
    }

    /// Gives `verdict` on `id` unless one was given already (here or, as ClickHouse shows, by
    /// another instance); returns the verdict in force and whether it is the one just given.
    pub async fn give(
        &self,
        ch: &clickhouse::Client,
        id: &str,
        verdict: Verdict,
        note: &str,
    ) -> Result<(Verdict, bool), VerdictError> {
        let mut given = self.given.lock().await;
        if let Some(v) = given.get(id) {
            return Ok((v.clone(), false));
        }
        let landed = alerts::labels(ch, id).await?;
        if let Some(l) = landed
            .iter()
            .find(|l| l.source == LabelSource::Analyst.as_str())
        {
            let v = Verdict {
                is_fraud: l.is_fraud == 1,
                analyst: l.analyst.clone(),
            };
            given.insert(id.to_string(), v.clone());
            return Ok((v, false));
        }
        let label = Label {
            source: LabelSource::Analyst,
            analyst: verdict.analyst.clone(),
            note: note.to_string(),
            ..Label::from_file(
                id.to_string(),
                verdict.is_fraud,
                fraudstream_common::now_millis(),
            )
        };
        let payload = self.codec.encode(&self.topic, &label).await?;
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(id).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
        tracing::info!(transaction_id = id, is_fraud = verdict.is_fraud, analyst = %verdict.analyst, "verdict published");
        given.insert(id.to_string(), verdict.clone());
        Ok((verdict, true))
    }

    /// Removes from `rows` those with a verdict given through this process (one lock for a page
    /// of the queue); returns how many it removed.
    pub async fn drop_given<T>(&self, rows: &mut Vec<T>, id: impl Fn(&T) -> &str) -> usize {
        let given = self.given.lock().await;
        let before = rows.len();
        rows.retain(|r| !given.contains_key(id(r)));
        before - rows.len()
    }
}
