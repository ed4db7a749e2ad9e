//! The scorer's Prometheus metrics.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};

pub struct ScorerMetrics {
    pub registry: Registry,
    pub records_in: IntCounter,
    pub predictions_out: IntCounter,
    pub alerts: IntCounter,
    pub dlq: IntCounter,
    pub models_refused: IntCounter,
    pub model_swaps: IntCounter,
    pub txn_committed: IntCounter,
    pub txn_aborted: IntCounter,
    pub batch_size: Histogram,
    pub scoring_seconds: Histogram,
    pub offsets_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub end_to_end_seconds: Histogram,
    pub model_version: IntGaugeVec,
    pub model_native: IntGaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub state_rebuilds: IntCounterVec,
}

impl ScorerMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("scorer".into()), None)?;
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram =
            |name: &str, help: &str, buckets: Vec<f64>| -> Result<Histogram, prometheus::Error> {
                let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let m = ScorerMetrics {
            records_in: counter("records_in_total", "Transactions consumed")?,
            predictions_out: counter(
                "predictions_out_total",
                "Predictions produced (committed or not)",
            )?,
            alerts: counter("alerts_total", "Alerts produced")?,
            dlq: counter("dlq_total", "Records sent to the dead-letter topic")?,
            models_refused: counter(
                "models_refused_total",
                "Model records refused (bad format, features, text)",
            )?,
            model_swaps: counter("model_swaps_total", "Models swapped in while running")?,
            txn_committed: counter(
                "transactions_committed_total",
                "Kafka transactions committed",
            )?,
            txn_aborted: counter(
                "transactions_aborted_total",
                "Kafka transactions aborted (work redone)",
            )?,
            batch_size: histogram(
                "batch_size",
                "Records scored per batch",
                exponential_buckets(1.0, 2.0, 14)?,
            )?,
            scoring_seconds: histogram(
                "scoring_seconds",
                "Feature + LightGBM time per batch",
                exponential_buckets(0.00005, 2.0, 16)?,
            )?,
            offsets_seconds: histogram(
                "send_offsets_seconds",
                "send_offsets_to_transaction time per Kafka transaction",
                exponential_buckets(0.001, 2.0, 14)?,
            )?,
            commit_seconds: histogram(
                "commit_seconds",
                "commit_transaction time per Kafka transaction (outputs flushed, markers requested)",
                exponential_buckets(0.001, 2.0, 14)?,
            )?,
            end_to_end_seconds: histogram(
                "end_to_end_seconds",
                "event_time to prediction produced",
                exponential_buckets(0.001, 2.0, 16)?,
            )?,
            model_version: IntGaugeVec::new(
                Opts::new("model_version", "Model version serving, by role"),
                &["role"],
            )?,
            model_native: IntGaugeVec::new(
                Opts::new(
                    "model_native",
                    "1 when the model's trees are evaluated natively, 0 when LightGBM's own predict serves it, by role",
                ),
                &["role"],
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new("consumer_lag", "Records behind the end of the partition"),
                &["partition"],
            )?,
            state_rebuilds: IntCounterVec::new(
                Opts::new(
                    "state_rebuild_records_total",
                    "Records re-read to rebuild account state, by partition",
                ),
                &["partition"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.model_version.clone()))?;
        m.registry.register(Box::new(m.model_native.clone()))?;
        m.registry.register(Box::new(m.consumer_lag.clone()))?;
        m.registry.register(Box::new(m.state_rebuilds.clone()))?;
        Ok(m)
    }
}
