//! Models from the compacted `models` topic: a watcher thread ([`crate::watcher`]) reads it from
//! the beginning, so the newest champion is known at start, and hands records to the scoring
//! thread, which owns the LightGBM boosters (they are not `Send`) and swaps them between batches,
//! so scoring never pauses.

use crate::metrics::ScorerMetrics;
use crate::watcher::TopicEvent;
use crate::{Engine, ScorerError};
use fraudstream_common::model::bootstrap_record;
use fraudstream_common::model::LoadedModel;
use fraudstream_schemas::{ModelRecord, ModelStatus};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::Duration;

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

/// What the models watcher tells the scoring thread.
pub type ModelEvent = TopicEvent<ModelRecord>;

impl ModelSet {
    /// Applies one event of the models topic (a tombstone changes nothing).
    pub fn on_event(&mut self, event: ModelEvent, model_name: &str, metrics: &ScorerMetrics) {
        match event {
            TopicEvent::Record { value: Some(r), .. } => self.apply(&r, model_name, metrics),
            TopicEvent::Undecodable(e) => self.refuse(e, metrics),
            TopicEvent::Record { value: None, .. } | TopicEvent::CaughtUp => {}
        }
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
            Ok(TopicEvent::CaughtUp) => {
                caught_up = true;
                if set.champion.is_none() {
                    tracing::warn!(topic = %engine.cfg.models_topic, "no champion model yet: waiting for one (or start with --model FILE)");
                    engine.health.set_unready("waiting for a champion model");
                }
            }
            Ok(event) => set.on_event(event, &engine.cfg.model_name, &engine.metrics),
            Err(_) => {}
        }
        if caught_up && set.champion.is_some() {
            break;
        }
    }
    Ok(set)
}
