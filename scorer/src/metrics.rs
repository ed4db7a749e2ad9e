//! The scorer's Prometheus metrics (names start with `scorer_`).

use fraudstream_common::server::Registrar;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

pub struct ScorerMetrics {
    pub registry: Registry,
    pub records_in: IntCounter,
    pub predictions_out: IntCounter,
    pub alerts: IntCounter,
    pub dlq: IntCounter,
    pub models_refused: IntCounter,
    pub model_swaps: IntCounter,
    pub rules_refused: IntCounter,
    pub rules_active: IntGauge,
    pub rules_version: IntGauge,
    pub txn_committed: IntCounter,
    pub txn_aborted: IntCounter,
    pub batch_size: Histogram,
    pub scoring_seconds: Histogram,
    pub drain_seconds: Histogram,
    pub offsets_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub end_to_end_seconds: Histogram,
    pub model_version: IntGaugeVec,
    pub model_native: IntGaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub state_rebuilds: IntCounterVec,
    pub registry_up: IntGauge,
}

impl ScorerMetrics {
    pub fn new() -> Result<Self, fraudstream_common::CommonError> {
        let r = Registrar::new("scorer")?;
        Ok(ScorerMetrics {
            records_in: r.counter("records_in_total", "Transactions consumed")?,
            predictions_out: r.counter(
                "predictions_out_total",
                "Predictions produced (committed or not)",
            )?,
            alerts: r.counter("alerts_total", "Alerts produced")?,
            dlq: r.counter("dlq_total", "Records sent to the dead-letter topic")?,
            models_refused: r.counter(
                "models_refused_total",
                "Model records refused (bad format, features, text)",
            )?,
            model_swaps: r.counter("model_swaps_total", "Models swapped in while running")?,
            rules_refused: r.counter(
                "rules_refused_total",
                "Rule records refused (expression does not compile, unknown field, undecodable)",
            )?,
            rules_active: r.gauge("rules_active", "Enabled rules in force")?,
            rules_version: r.gauge(
                "rules_version",
                "Rule set in force: the rules topic's offset after the last change applied",
            )?,
            txn_committed: r.counter(
                "transactions_committed_total",
                "Kafka transactions committed",
            )?,
            txn_aborted: r.counter(
                "transactions_aborted_total",
                "Kafka transactions aborted (work redone)",
            )?,
            batch_size: r.histogram("batch_size", "Records scored per batch", 1.0, 2.0, 14)?,
            scoring_seconds: r.histogram(
                "scoring_seconds",
                "Feature + LightGBM time per batch",
                0.00005,
                2.0,
                16,
            )?,
            // The three phases of a commit, each holding the Kafka loop (nothing is polled or
            // sent meanwhile): together they are most of what the end-to-end latency adds to the
            // broker's own path. From 0.25 ms: a phase takes a few ms on a healthy broker.
            drain_seconds: r.histogram(
                "drain_seconds",
                "Time per Kafka transaction to deliver its last outputs (produce acknowledged)",
                0.00025,
                2.0,
                16,
            )?,
            offsets_seconds: r.histogram(
                "send_offsets_seconds",
                "send_offsets_to_transaction time per Kafka transaction (input offsets added)",
                0.00025,
                2.0,
                16,
            )?,
            commit_seconds: r.histogram(
                "commit_seconds",
                "commit_transaction time per Kafka transaction (EndTxn; markers requested)",
                0.00025,
                2.0,
                16,
            )?,
            end_to_end_seconds: r.histogram(
                "end_to_end_seconds",
                "event_time to prediction produced",
                0.001,
                2.0,
                16,
            )?,
            registry_up: r.gauge(
                "registry_up",
                "0 while the schema registry cannot answer (records wait, none is dead-lettered)",
            )?,
            model_version: r.gauge_vec(
                "model_version",
                "Model version serving, by role",
                &["role"],
            )?,
            model_native: r.gauge_vec(
                "model_native",
                "1 when the model's trees are evaluated natively, 0 when LightGBM's own predict serves it, by role",
                &["role"],
            )?,
            consumer_lag: r.gauge_vec(
                "consumer_lag",
                "Records behind the end of the partition",
                &["partition"],
            )?,
            state_rebuilds: r.counter_vec(
                "state_rebuild_records_total",
                "Records re-read to rebuild account state, by partition",
                &["partition"],
            )?,
            registry: r.registry,
        })
    }
}
