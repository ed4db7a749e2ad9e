//! The analyst rules the scoring thread applies ([`fraudstream_common::rules`]). Changes come from
//! the compacted `rules` topic ([`crate::watcher`]) and are applied between batches, like models:
//! every transaction of a batch is decided under one rule set, whose version each prediction
//! records. Scoring starts only once the topic was read to its end, so a restarted scorer never
//! decides under an older rule set than the one it stopped with.

use crate::metrics::ScorerMetrics;
use crate::watcher::TopicEvent;
use fraudstream_common::rules::RuleSet;
use fraudstream_schemas::Rule;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

pub type RuleEvent = TopicEvent<Rule>;

/// The rule set in force and where its changes come from.
pub struct Rules {
    pub set: RuleSet,
    events: Receiver<RuleEvent>,
}

impl Rules {
    /// Reads the rules topic to its end (the rules in force at start), or until `stop`.
    pub fn load(events: Receiver<RuleEvent>, metrics: &ScorerMetrics, stop: &AtomicBool) -> Self {
        let mut rules = Rules {
            set: RuleSet::default(),
            events,
        };
        while !stop.load(Ordering::Relaxed) {
            match rules.events.recv_timeout(Duration::from_millis(200)) {
                Ok(TopicEvent::CaughtUp) => break,
                Ok(event) => rules.on_event(event, metrics),
                Err(_) => {}
            }
        }
        tracing::info!(
            active = rules.set.active(),
            version = rules.set.version(),
            "rules loaded"
        );
        rules
    }

    /// Applies the changes that arrived since the last batch.
    pub fn apply_events(&mut self, metrics: &ScorerMetrics) {
        while let Ok(event) = self.events.try_recv() {
            self.on_event(event, metrics);
        }
    }

    fn on_event(&mut self, event: RuleEvent, metrics: &ScorerMetrics) {
        let result = match event {
            TopicEvent::Record { key, value, offset } => {
                let change = value.as_ref().map_or("deleted", |_| "added or changed");
                self.set
                    .apply(&key, value.map(|r| *r), offset)
                    .map(|()| tracing::info!(rule = %key, change, version = self.set.version(), active = self.set.active(), "rule set changed"))
                    .map_err(|e| e.to_string())
            }
            TopicEvent::Undecodable(e) => Err(e),
            TopicEvent::CaughtUp => Ok(()),
        };
        if let Err(e) = result {
            metrics.rules_refused.inc();
            tracing::error!(error = %e, version = self.set.version(), "rule refused; the rules in force keep serving");
        }
        metrics.rules_active.set(self.set.active() as i64);
        metrics.rules_version.set(self.set.version());
    }
}
