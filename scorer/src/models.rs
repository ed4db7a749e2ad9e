//! Models from the compacted `models` topic: a watcher thread reads it (from the beginning, so the
//! newest champion is known at start) and hands records to the scoring thread, which owns the
//! LightGBM boosters (they are not `Send`) and swaps them between batches, so scoring never pauses.

use crate::metrics::ScorerMetrics;
use crate::{Engine, ScorerError};
use fraudstream_common::kafka::KafkaArgs;
use fraudstream_common::model::bootstrap_record;
use fraudstream_common::model::LoadedModel;
use fraudstream_common::registry_wait::RegistryWait;
use fraudstream_schemas::{Codec, ModelRecord, ModelStatus};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

/// What the watcher tells the scoring thread.
pub enum ModelEvent {
    Record(Box<ModelRecord>),
    /// A record on the models topic that is not a ModelRecord at all.
    Undecodable(String),
    /// Everything that was on the topic at start has been delivered.
    CaughtUp,
}

/// Reads `topic` from the beginning, forever (until `stop`), on a thread of its own.
pub fn spawn_watcher(
    kafka: &KafkaArgs,
    topic: &str,
    codec: Arc<Codec>,
    registry: Arc<RegistryWait>,
    runtime: tokio::runtime::Handle,
    events: Sender<ModelEvent>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer = kafka
        .client_config_with(&[
            ("group.id", "scorer-models-reader"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
        ])
        .map_err(|e| rdkafka::error::KafkaError::ClientCreation(e.to_string()))?
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        ends.push((p.id(), high));
    }
    consumer.assign(&tpl)?;
    let topic = topic.to_string();
    Ok(std::thread::Builder::new()
        .name("model-watcher".into())
        .spawn(move || {
            let mut caught_up = false;
            while !stop.load(Ordering::Relaxed) {
                if !caught_up && read_to(&consumer, &topic, &ends) {
                    caught_up = true;
                    if events.send(ModelEvent::CaughtUp).is_err() {
                        return;
                    }
                }
                let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let event = match msg {
                    Ok(m) => match m.payload() {
                        None => continue, // a tombstone: nothing to load
                        Some(payload) => {
                            // A registry outage delays the model; it does not refuse it.
                            let decoded = registry.retry_blocking(
                                || stop.load(Ordering::Relaxed),
                                || runtime.block_on(codec.decode::<ModelRecord>(payload)),
                            );
                            match decoded {
                                Ok(r) => ModelEvent::Record(Box::new(r)),
                                Err(e) if e.is_registry_unavailable() => return, // stopping
                                Err(e) => ModelEvent::Undecodable(format!(
                                    "{topic}[{}]@{}: {e}",
                                    m.partition(),
                                    m.offset()
                                )),
                            }
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the models topic");
                        continue;
                    }
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        })
        .expect("spawning the model watcher"))
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

/// The models the scoring thread serves: a champion (alerts) and optionally a challenger (shadow).
#[derive(Default)]
pub struct ModelSet {
    pub champion: Option<LoadedModel>,
    pub challenger: Option<LoadedModel>,
}

impl ModelSet {
    /// Applies one record for `model_name`; a record that cannot be loaded is refused and the
    /// models already serving keep serving.
    pub fn apply(&mut self, record: &ModelRecord, model_name: &str, metrics: &ScorerMetrics) {
        if record.model_name != model_name {
            return;
        }
        let current = |m: &Option<LoadedModel>| m.as_ref().map(|m| m.version);
        match record.status {
            ModelStatus::Champion if current(&self.champion) != Some(record.version) => {
                match LoadedModel::from_record(record) {
                    Ok(m) => {
                        tracing::info!(version = m.version, threshold = m.threshold, from = ?current(&self.champion), native = m.is_native(), "champion model swapped in");
                        if self.champion.is_some() {
                            metrics.model_swaps.inc();
                        }
                        if current(&self.challenger) == Some(m.version) {
                            self.challenger = None;
                        }
                        self.champion = Some(m);
                    }
                    Err(e) => self.refuse(e, metrics),
                }
            }
            ModelStatus::Challenger if current(&self.challenger) != Some(record.version) => {
                match LoadedModel::from_record(record) {
                    Ok(m) => {
                        tracing::info!(
                            version = m.version,
                            native = m.is_native(),
                            "challenger model loaded (shadow scoring)"
                        );
                        self.challenger = Some(m);
                    }
                    Err(e) => self.refuse(e, metrics),
                }
            }
            ModelStatus::Retired if current(&self.challenger) == Some(record.version) => {
                tracing::info!(version = record.version, "challenger retired");
                self.challenger = None;
            }
            _ => {}
        }
        self.report(metrics);
    }

    /// The serving versions (0: none) and whether each is scored natively, in the metrics.
    pub fn report(&self, metrics: &ScorerMetrics) {
        for (role, model) in [
            ("champion", &self.champion),
            ("challenger", &self.challenger),
        ] {
            let (version, native) = model
                .as_ref()
                .map_or((0, false), |m| (m.version, m.is_native()));
            metrics
                .model_version
                .with_label_values(&[role])
                .set(version as i64);
            metrics
                .model_native
                .with_label_values(&[role])
                .set(i64::from(native));
        }
    }

    pub fn refuse(&self, e: impl std::fmt::Display, metrics: &ScorerMetrics) {
        metrics.models_refused.inc();
        tracing::error!(
            error = %e,
            serving = ?self.champion.as_ref().map(|m| m.version),
            "model refused; the current model keeps serving"
        );
    }
}

/// Waits until the models topic was read to its end and a champion is known.
pub(crate) fn initial_models(
    engine: &Engine,
    events: &Receiver<ModelEvent>,
    bootstrap: Option<String>,
) -> Result<ModelSet, ScorerError> {
    let mut set = ModelSet::default();
    if let Some(text) = bootstrap {
        let record = bootstrap_record(&engine.cfg.model_name, text, engine.cfg.bootstrap_threshold);
        let model = LoadedModel::from_record(&record).map_err(|source| ScorerError::Bootstrap {
            path: engine
                .cfg
                .bootstrap_model
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            source,
        })?;
        set.champion = Some(model);
        set.report(&engine.metrics);
    }
    engine.health.set_unready("reading the models topic");
    let mut caught_up = false;
    while !engine.stop.load(Ordering::Relaxed) {
        match events.recv_timeout(Duration::from_millis(200)) {
            Ok(ModelEvent::CaughtUp) => {
                caught_up = true;
                if set.champion.is_none() {
                    tracing::warn!(topic = %engine.cfg.models_topic, "no champion model yet: waiting for one (or start with --model FILE)");
                    engine.health.set_unready("waiting for a champion model");
                }
            }
            Ok(ModelEvent::Record(r)) => set.apply(&r, &engine.cfg.model_name, &engine.metrics),
            Ok(ModelEvent::Undecodable(e)) => set.refuse(e, &engine.metrics),
            Err(_) => {}
        }
        if caught_up && set.champion.is_some() {
            break;
        }
    }
    Ok(set)
}
