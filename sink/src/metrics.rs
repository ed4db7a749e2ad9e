//! The sink's Prometheus metrics (names start with `sink_`).

use fraudstream_common::server::Registrar;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

pub struct SinkMetrics {
    pub registry: Registry,
    pub records_in: IntCounterVec,
    pub rows_inserted: IntCounterVec,
    pub batches: IntCounter,
    pub retries: IntCounter,
    pub dlq: IntCounter,
    pub commit_failures: IntCounter,
    pub insert_seconds: Histogram,
    pub clickhouse_up: IntGauge,
    pub registry_up: IntGauge,
    pub paused: IntGauge,
    pub consumer_lag: IntGaugeVec,
}

impl SinkMetrics {
    /// The ClickHouse loop's metrics (`sink_*`) in a registry of their own.
    pub fn new() -> Result<Self, fraudstream_common::CommonError> {
        Self::register(Registrar::new("sink")?)
    }

    /// Another loop's metrics in the same registry under `<prefix>_*` (`sink_bigquery_*`), so one
    /// /metrics shows both destinations.
    pub fn alongside(&self, prefix: &str) -> Result<Self, fraudstream_common::CommonError> {
        Self::register(Registrar::on(self.registry.clone(), prefix))
    }

    fn register(r: Registrar) -> Result<Self, fraudstream_common::CommonError> {
        Ok(SinkMetrics {
            records_in: r.counter_vec("records_in_total", "Records read, by topic", &["topic"])?,
            rows_inserted: r.counter_vec(
                "rows_inserted_total",
                "Rows inserted into ClickHouse and committed, by table",
                &["table"],
            )?,
            batches: r.counter("batches_total", "Batches inserted and committed")?,
            retries: r.counter(
                "insert_retries_total",
                "Insert attempts that failed and were retried",
            )?,
            dlq: r.counter(
                "dlq_total",
                "Undecodable records sent to the dead-letter topic",
            )?,
            commit_failures: r.counter(
                "commit_failures_total",
                "Offset commits that failed after an insert (rows are re-read and deduplicated)",
            )?,
            insert_seconds: r.histogram(
                "insert_seconds",
                "Time to write one batch, retries included",
                0.005,
                2.0,
                16,
            )?,
            clickhouse_up: r.gauge("clickhouse_up", "1 when the last insert succeeded")?,
            registry_up: {
                let g = r.gauge(
                    "registry_up",
                    "0 while the schema registry cannot answer (records wait, none is dead-lettered)",
                )?;
                g.set(1);
                g
            },
            paused: r.gauge(
                "paused",
                "1 while fetching is paused, waiting for a batch to be written",
            )?,
            consumer_lag: r.gauge_vec(
                "consumer_lag",
                "Records behind the end of the partition",
                &["topic", "partition"],
            )?,
            registry: r.registry,
        })
    }
}
