//! Each schema through the real registry and a real topic: encode → produce → consume → decode.

use fraudstream_common::kafka::{ensure_topics, TopicSpec};
use fraudstream_common::testing::{
    free_port, local_kafka, read_topic, start_registry, terminate_and_wait, unique_name,
};
use fraudstream_schemas::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use std::collections::HashMap;
use std::time::Duration;

async fn round_trip<T: AvroRecord + PartialEq + std::fmt::Debug>(test: &str, values: Vec<T>) {
    let kafka = local_kafka();
    let topic = unique_name(test);
    ensure_topics(&kafka.admin().unwrap(), &[TopicSpec::new(&topic, 1)])
        .await
        .unwrap();
    let codec = Codec::new(&kafka.schema_registry);
    let producer: FutureProducer = kafka.client_config().unwrap().create().unwrap();
    for v in &values {
        let payload = codec.encode(&topic, v).await.unwrap();
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let messages = read_topic(&kafka, &topic, true, values.len(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(messages.len(), values.len(), "all records come back");
    let id = codec.schema_id::<T>(&topic).await.unwrap();
    for (m, want) in messages.iter().zip(&values) {
        let payload = m.payload().unwrap();
        assert_eq!(payload[0], 0, "Confluent magic byte");
        assert_eq!(u32::from_be_bytes(payload[1..5].try_into().unwrap()), id);
        // A fresh codec, as another service would have: it must fetch the schema by id.
        let decoded: T = Codec::new(&kafka.schema_registry)
            .decode(payload)
            .await
            .unwrap();
        assert_eq!(&decoded, want);
    }
}

fn transaction(i: i32) -> Transaction {
    Transaction {
        transaction_id: format!("tx-{i}"),
        event_time: 1_700_000_000_000 + i as i64,
        step: i,
        tx_type: TransactionType::ALL[i as usize % 5],
        amount: 100.25 * i as f64,
        name_orig: format!("C{i}"),
        oldbalance_org: 1000.0,
        newbalance_orig: 899.75,
        name_dest: format!("M{i}"),
        oldbalance_dest: 0.0,
        newbalance_dest: 0.0,
        is_flagged_fraud: i % 2 == 0,
    }
}

#[tokio::test]
async fn transaction_round_trip() {
    round_trip("transaction_round_trip", (0..10).map(transaction).collect()).await;
}

#[tokio::test]
async fn label_round_trip() {
    let labels = (0..5)
        .map(|i| Label {
            source: if i == 4 {
                fraudstream_schemas::LabelSource::Analyst
            } else {
                fraudstream_schemas::LabelSource::File
            },
            analyst: if i == 4 { "ana".into() } else { String::new() },
            ..Label::from_file(format!("tx-{i}"), i == 3, 1_700_000_100_000 + i)
        })
        .collect();
    round_trip("label_round_trip", labels).await;
}

#[tokio::test]
async fn prediction_round_trip() {
    let predictions = (0..5)
        .map(|i| Prediction {
            transaction_id: format!("tx-{i}"),
            name_orig: format!("C{i}"),
            tx_type: TransactionType::Transfer,
            amount: 5.5,
            event_time: 1_700_000_000_000,
            scored_at: 1_700_000_000_050,
            score: i as f64 / 10.0,
            is_alert: i == 4,
            threshold: 0.35,
            model_name: "paysim".into(),
            model_version: 2,
            challenger_score: (i % 2 == 0).then_some(0.2),
            challenger_version: (i % 2 == 0).then_some(3),
            top_reasons: if i == 4 {
                vec![
                    Reason {
                        feature: "error_balance_orig".into(),
                        contribution: 3.1,
                    },
                    Reason {
                        feature: "amount".into(),
                        contribution: 1.2,
                    },
                ]
            } else {
                vec![]
            },
            rule_hits: if i == 4 {
                vec![fraudstream_schemas::RuleHit {
                    id: "allow-payroll".into(),
                    version: 1,
                    action: fraudstream_schemas::RuleAction::Suppress,
                }]
            } else {
                vec![]
            },
            rules_version: i as i64,
        })
        .collect();
    round_trip("prediction_round_trip", predictions).await;
}

#[tokio::test]
async fn model_record_round_trip() {
    let record = ModelRecord {
        model_name: "paysim".into(),
        version: 7,
        created_at: 1_700_000_000_000,
        format: "lightgbm-text".into(),
        feature_names: vec!["amount".into(), "step".into()],
        threshold: 0.42,
        metrics: HashMap::from([("pr_auc".into(), 0.991), ("roc_auc".into(), 0.999)]),
        training_window_start: 1,
        training_window_end: 2,
        compression: Compression::None,
        model_text: b"tree\nversion=v4\n".repeat(1000),
        status: ModelStatus::Champion,
    };
    round_trip("model_record_round_trip", vec![record]).await;
}

#[tokio::test]
async fn unreachable_registry_is_a_clear_error() {
    let codec = Codec::new("http://127.0.0.1:1/apis/ccompat/v7");
    let err = codec.encode("t", &transaction(1)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1:1") && msg.contains("SCHEMA_REGISTRY_URL"),
        "{msg}"
    );
}

/// Records in Kafka carry schema ids: a restarted registry must still answer for every id it
/// gave out, with the same schema (in memory, it forgot them and gave id 1 to another schema).
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_registry_keeps_every_schema_id() {
    let dir = std::env::temp_dir().join(unique_name("registry_restart"));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/apis/ccompat/v7");
    let label = Label::from_file("tx-1".into(), true, 1_700_000_000_000);
    let mut registry = start_registry(port, &dir).await;
    let codec = Codec::new(&url);
    let tx_id = codec.schema_id::<Transaction>("restart-tx").await.unwrap();
    let label_id = codec.schema_id::<Label>("restart-labels").await.unwrap();
    assert_ne!(tx_id, label_id);
    let payload = Codec::encode_with_id(label_id, &label).unwrap();
    terminate_and_wait(&mut registry);

    let _registry = start_registry(port, &dir).await;
    let fresh = Codec::new(&url);
    let decoded: Label = fresh
        .decode(&payload)
        .await
        .expect("the id still names the Label schema");
    assert_eq!(decoded, label);
    assert_eq!(
        fresh.schema_id::<Transaction>("restart-tx").await.unwrap(),
        tx_id
    );
    assert_eq!(
        fresh.schema_id::<Label>("restart-labels").await.unwrap(),
        label_id
    );
    let _ = std::fs::remove_dir_all(&dir);
}
