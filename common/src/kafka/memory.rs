//! One setting for what a service's Kafka clients may hold in memory.
//!
//! librdkafka's defaults are sized for throughput nobody asked for: a consumer keeps up to 64 MiB
//! prefetched (plus fetches of up to 64 MiB in flight), a producer queues up to 1 GiB. Most of a
//! service's memory went there (the scorer peaked at ~370 MiB). With a budget the queues are a
//! few batches deep instead (the scorer: ~370 MiB → ~125 MiB at the same throughput). What made small queues slow was not their size: a consumer whose
//! queue is full waits `fetch.queue.backoff.ms` (1 s by default) before fetching that partition
//! again; at 5 ms the prefetch keeps up (measured: a 4 MiB queue passes 1.1M records/s).

/// `--memory-budget-mib`: shared by the services that consume in bulk (scorer, sink).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct MemoryArgs {
    /// Memory for Kafka buffers (MiB): a quarter for the consumer's prefetch queue, an eighth for
    /// one fetch, a quarter for the producer's queue. 16 keeps full throughput on this project's
    /// records on a local broker (measured: no slower than 64); raise it for a distant broker or
    /// large records. -X overrides any one librdkafka setting.
    #[arg(long = "memory-budget-mib", env = "FRAUDSTREAM_MEMORY_BUDGET_MIB", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(8..))]
    pub budget_mib: u64,
}

impl Default for MemoryArgs {
    fn default() -> Self {
        MemoryArgs { budget_mib: 16 }
    }
}

impl MemoryArgs {
    fn kib(&self, fraction: u64) -> u64 {
        self.budget_mib * 1024 / fraction
    }

    /// Consumer settings: a prefetch queue of a quarter of the budget, refilled promptly, and at
    /// least `batch_records` records per partition asked for (the batch the service takes at once).
    pub fn consumer(&self, batch_records: usize) -> Vec<(&'static str, String)> {
        let fetch_bytes = self.kib(8) * 1024;
        vec![
            ("queued.max.messages.kbytes", self.kib(4).to_string()),
            ("queued.min.messages", batch_records.max(1000).to_string()),
            ("fetch.max.bytes", fetch_bytes.to_string()),
            // A few partitions fit in one fetch.
            (
                "max.partition.fetch.bytes",
                (fetch_bytes / 4).max(65_536).to_string(),
            ),
            ("fetch.queue.backoff.ms", "5".into()),
        ]
    }

    /// Producer settings: a queue of a quarter of the budget, batches of at most a 32nd.
    pub fn producer(&self) -> Vec<(&'static str, String)> {
        vec![
            ("queue.buffering.max.kbytes", self.kib(4).to_string()),
            (
                "batch.size",
                (self.kib(32) * 1024).min(1_000_000).to_string(),
            ),
        ]
    }
}

/// `defaults` then `sized` (which win), as `client_config_with` takes them.
pub fn with_sized<'a>(
    defaults: &[(&'a str, &'a str)],
    sized: &'a [(&'static str, String)],
) -> Vec<(&'a str, &'a str)> {
    let mut all = defaults.to_vec();
    all.extend(sized.iter().map(|(k, v)| (*k, v.as_str())));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_splits_into_the_queues() {
        let m = MemoryArgs { budget_mib: 64 };
        let c = m.consumer(10_000);
        let get = |k: &str| c.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(get("queued.max.messages.kbytes"), "16384");
        assert_eq!(get("fetch.max.bytes"), (8 << 20).to_string());
        assert_eq!(get("queued.min.messages"), "10000");
        let p = m.producer();
        assert_eq!(p[0].1, "16384");
        let merged = with_sized(&[("linger.ms", "5"), ("batch.size", "1")], &p);
        let batch: Vec<&str> = merged
            .iter()
            .filter(|(k, _)| *k == "batch.size")
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(
            batch.last(),
            Some(&"1000000"),
            "sized settings come last and win"
        );
    }
}
