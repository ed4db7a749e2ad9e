//! Tools of the fault suite (`make faults`), run against the local services:
//!
//! - `garbage TOPIC N`: N records that are not Avro at all (they must end in the DLQ).
//! - `corrupt-model TOPIC`: a ModelRecord whose LightGBM text is garbage, plus a record that is
//!   not a ModelRecord (both must be refused while the old model keeps serving).
//! - `evolved TOPIC CSV N PREFIX`: N transactions from CSV written with a newer Transaction schema
//!   (one more optional field, registered in the registry): an old scorer must still decode them.
//! - `unknown-id TOPIC CSV N PREFIX BACKUP`: registers a Transaction schema (new content), saves
//!   a backup of the registry (Apicurio's export) to BACKUP, deletes the schema for good, then
//!   writes N transactions from CSV with its id: a registry that lost a schema and answers 404
//!   for it while healthy. They must go to the dead-letter topics. Prints the id.
//! - `restore-schema BACKUP ID`: imports the backup (Apicurio keeps the ids) and checks ID is
//!   known again: the dead letters above become decodable, for a replay.
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

/// The first `n` good rows of `csv` as transactions with ids `<prefix>-<line>`.
fn transactions(csv: &str, n: u64, prefix: &str) -> Vec<Transaction> {
    let mut reader = paysim::CsvReader::open(std::path::Path::new(csv)).unwrap();
    let mut out = Vec::new();
    while let Some((line, row)) = reader.next_row().unwrap() {
        if out.len() as u64 >= n {
            break;
        }
        if let Ok(r) = row {
            let id = format!("{prefix}-{line}");
            out.push(r.into_transaction(id, fraudstream_common::now_millis()));
        }
    }
    out
}

/// `curl` with `args`; its stdout, or exits with what failed.
fn curl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("curl")
        .arg("-sSf")
        .args(args)
        .output()
        .expect("curl");
    if !out.status.success() {
        eprintln!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
    out.stdout
}

/// Apicurio's own API next to its Confluent-compatible one.
fn admin_api(registry: &str) -> String {
    format!(
        "{}/apis/registry/v3/admin",
        registry
            .trim_end_matches('/')
            .trim_end_matches("/apis/ccompat/v7")
    )
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
            let mut sent = 0;
            for tx in transactions(csv, n, prefix) {
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
        Some("unknown-id") => {
            let (topic, csv, n, prefix, backup) = (
                &args[1],
                &args[2],
                args[3].parse::<u64>().unwrap(),
                &args[4],
                &args[5],
            );
            let registry = kafka.schema_registry.trim_end_matches('/');
            let mut schema: serde_json::Value =
                serde_json::from_str(<Transaction as fraudstream_schemas::AvroRecord>::SCHEMA_JSON)
                    .unwrap();
            schema["doc"] = serde_json::json!(format!("written by {prefix}"));
            let subject = format!("{topic}-lost");
            let id = register(registry, &subject, &schema.to_string());
            curl(&["-o", backup, &format!("{}/export", admin_api(registry))]);
            let subject_url = format!("{registry}/subjects/{}", topics::value_subject(&subject));
            curl(&["-X", "DELETE", &subject_url]);
            curl(&["-X", "DELETE", &format!("{subject_url}?permanent=true")]);
            for tx in transactions(csv, n, prefix) {
                let payload = Codec::encode_with_id(id, &tx).unwrap();
                send(&producer, topic, &tx.name_orig, &payload).await;
            }
            println!("{id}");
        }
        Some("restore-schema") => {
            let (backup, id) = (&args[1], &args[2]);
            let registry = kafka.schema_registry.trim_end_matches('/');
            curl(&[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/zip",
                "--data-binary",
                &format!("@{backup}"),
                &format!("{}/import?requireEmptyRegistry=false", admin_api(registry)),
            ]);
            curl(&["-o", "/dev/null", &format!("{registry}/schemas/ids/{id}")]);
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
                let (low, high) =
                    fraudstream_common::kafka::watermarks(&consumer, topic, p.id()).unwrap();
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
            eprintln!("usage: fault_tools garbage TOPIC N | corrupt-model TOPIC | evolved TOPIC CSV N PREFIX | unknown-id TOPIC CSV N PREFIX BACKUP | restore-schema BACKUP ID | count TOPIC");
            std::process::exit(2);
        }
    }
}
