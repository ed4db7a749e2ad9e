//! Tools of the fault suite (`make faults`), run against the local services:
//!
//! - `garbage TOPIC N`: N records that are not Avro at all (they must end in the DLQ).
//! - `corrupt-model TOPIC`: a ModelRecord whose LightGBM text is garbage, plus a record that is
//!   not a ModelRecord (both must be refused while the old model keeps serving).
//! - `evolved TOPIC CSV N PREFIX`: N transactions from CSV written with a newer Transaction schema
//!   (one more optional field, registered in the registry): an old scorer must still decode them.
//! - `count TOPIC`: reads the topic read_committed to its end; prints `records distinct_ids`
//!   (for predictions: distinct transaction ids; anything else: records twice).

use fraudstream_common::testing::{local_kafka, unique_name};
use fraudstream_schemas::{topics, Codec, ModelRecord, Prediction, Transaction};
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use std::collections::HashSet;
use std::time::Duration;

async fn send(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivery");
}

/// The Transaction schema plus one optional field, as a newer producer would write it.
fn evolved_schema() -> String {
    let mut schema: serde_json::Value =
        serde_json::from_str(<Transaction as fraudstream_schemas::AvroRecord>::SCHEMA_JSON)
            .unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"name": "channel", "type": ["null", "string"], "default": null}
        ));
    schema.to_string()
}

/// Registers `schema` under the topic's subject (Confluent API) and returns its id.
fn register(registry: &str, topic: &str, schema: &str) -> u32 {
    let body = serde_json::json!({ "schema": schema }).to_string();
    let out = std::process::Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/vnd.schemaregistry.v1+json",
        ])
        .arg("--data-binary")
        .arg(&body)
        .arg(format!(
            "{}/subjects/{}/versions",
            registry.trim_end_matches('/'),
            topics::value_subject(topic)
        ))
        .output()
        .expect("curl");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("registry refused the evolved schema: {out:?}"));
    reply["id"].as_u64().expect("schema id") as u32
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kafka = local_kafka();
    let producer: FutureProducer = kafka
        .client_config_with(&[("enable.idempotence", "true")])
        .unwrap()
        .create()
        .unwrap();
    match args.first().map(String::as_str) {
        Some("garbage") => {
            let n: u64 = args[2].parse().unwrap();
            for i in 0..n {
                send(
                    &producer,
                    &args[1],
                    &format!("garbage-{i}"),
                    b"\x00\x00\x00\x00\x09garbage",
                )
                .await;
            }
        }
        Some("corrupt-model") => {
            let codec = Codec::new(&kafka.schema_registry);
            let mut record: ModelRecord =
                scorer::bootstrap_record("paysim", "tree\nthis is not a model".into(), 0.5);
            record.version = 99;
            let payload = codec.encode(&args[1], &record).await.unwrap();
            send(&producer, &args[1], "paysim:champion", &payload).await;
            send(
                &producer,
                &args[1],
                "paysim:champion",
                b"not a model record",
            )
            .await;
        }
        Some("evolved") => {
            let (topic, csv, n, prefix) = (
                &args[1],
                &args[2],
                args[3].parse::<u64>().unwrap(),
                &args[4],
            );
            let schema_text = evolved_schema();
            let schema = apache_avro::Schema::parse_str(&schema_text).unwrap();
            let id = register(&kafka.schema_registry, topic, &schema_text);
            let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
                .build()
                .unwrap();
            let mut reader = producer::paysim::CsvReader::open(std::path::Path::new(csv)).unwrap();
            let mut sent = 0;
            while let Some((line, row)) = reader.next_row().unwrap() {
                if sent >= n {
                    break;
                }
                let Ok(r) = row else { continue };
                let tx = r
                    .into_transaction(format!("{prefix}-{line}"), fraudstream_common::now_millis());
                let mut value = apache_avro::to_value(&tx).unwrap();
                if let apache_avro::types::Value::Record(fields) = &mut value {
                    fields.push((
                        "channel".into(),
                        apache_avro::types::Value::Union(
                            1,
                            Box::new(apache_avro::types::Value::String("mobile-app".into())),
                        ),
                    ));
                }
                let value = value.resolve(&schema).unwrap();
                let mut payload = vec![0u8];
                payload.extend_from_slice(&id.to_be_bytes());
                payload.extend(writer.write_value_to_vec(value).unwrap());
                send(&producer, topic, &tx.name_orig, &payload).await;
                sent += 1;
            }
            println!("{sent} evolved transactions (schema id {id})");
        }
        Some("count") => {
            let topic = &args[1];
            let codec = Codec::new(&kafka.schema_registry);
            let consumer = kafka.range_reader(&unique_name("count")).unwrap();
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .unwrap();
            let (mut records, mut ids) = (0u64, HashSet::new());
            for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .unwrap();
                let mut payloads = Vec::new();
                fraudstream_common::kafka::read_partition_range(
                    &consumer,
                    topic,
                    p.id(),
                    low,
                    high,
                    Duration::from_secs(120),
                    |m| {
                        payloads.push(m.payload().map(<[u8]>::to_vec).unwrap_or_default());
                    },
                )
                .unwrap();
                for payload in payloads {
                    records += 1;
                    match codec.decode::<Prediction>(&payload).await {
                        Ok(p) => ids.insert(p.transaction_id),
                        Err(_) => ids.insert(format!("raw-{records}")),
                    };
                }
            }
            println!("{records} {}", ids.len());
        }
        _ => {
            eprintln!("usage: fault_tools garbage TOPIC N | corrupt-model TOPIC | evolved TOPIC CSV N PREFIX | count TOPIC");
            std::process::exit(2);
        }
    }
}
