//! The sink's raw-insert baseline (for `make bench`): the same prediction rows the sink lands,
//! decoded into memory first, then inserted into the same ClickHouse by the same client and the
//! same insert function, in batches of the sink's size. Only the inserts are timed, so
//! sink rows/s ÷ this rate is what the sink's Kafka reads, decoding and commits cost.
//!
//! `raw_insert --topic T --clickhouse-database DB [--batch-rows N]` (Kafka, registry and
//! ClickHouse settings from the environment, as for the sink).
use clap::Parser;
use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::kafka::{read_partition_range, KafkaArgs};
use fraudstream_schemas::Prediction;
use rdkafka::consumer::Consumer;
use rdkafka::Message;
use sink::rows::{insert, PredictionRow};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: fraudstream_common::alloc::MiMalloc = fraudstream_common::alloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// The predictions topic to read whole.
    #[arg(long)]
    topic: String,
    /// Rows per insert (the sink's --batch-rows).
    #[arg(long, default_value_t = 200_000)]
    batch_rows: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let payloads = read_topic(&args.kafka, &args.topic)?;
    let codec = args.kafka.codec()?;
    let mut rows = Vec::with_capacity(payloads.len());
    for p in &payloads {
        rows.push(PredictionRow::from(codec.decode::<Prediction>(p).await?));
    }
    drop(payloads);
    args.clickhouse.migrate().await?;
    let client = args.clickhouse.client();
    let started = Instant::now();
    for chunk in rows.chunks(args.batch_rows) {
        insert(&client, "predictions", chunk).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "inserted {} rows in {secs:.2}s ({:.0} rows/s)",
        rows.len(),
        rows.len() as f64 / secs
    );
    Ok(())
}

/// Every record of `topic`, partition by partition, up to its end when read.
fn read_topic(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let reader = kafka.range_reader("raw-insert")?;
    let metadata = reader.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut payloads = Vec::new();
    for p in 0..partitions {
        let (low, high) = fraudstream_common::kafka::watermarks(&reader, topic, p)?;
        let timeout = Duration::from_secs(120);
        read_partition_range(&reader, topic, p, low, high, timeout, |m| {
            payloads.extend(m.payload().map(<[u8]>::to_vec));
        })?;
    }
    Ok(payloads)
}
