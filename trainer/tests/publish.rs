//! Model versions on a real compacted models topic: each publish is the next version.

use fraudstream_common::kafka::{ensure_topics, TopicSpec};
use fraudstream_common::testing::{local_kafka, unique_name};
use fraudstream_schemas::ModelStatus;
use std::collections::HashMap;
use trainer::{publish_model, read_models, Trained};

#[tokio::test(flavor = "multi_thread")]
async fn each_publish_is_the_next_version_and_reads_back() {
    let kafka = local_kafka();
    let topic = unique_name("trainer_models");
    ensure_topics(
        &kafka.admin().unwrap(),
        &[TopicSpec::new(&topic, 1).compacted()],
    )
    .await
    .unwrap();
    let trained = Trained {
        model_text: "tree\n".repeat(20_000), // large enough to be stored compressed
        threshold: 0.7,
        metrics: HashMap::from([("pr_auc".to_string(), 0.99)]),
        ..Trained::default()
    };
    let first = publish_model(
        &kafka,
        &topic,
        "paysim",
        &trained,
        ModelStatus::Champion,
        (1, 2),
    )
    .await
    .unwrap();
    let second = publish_model(
        &kafka,
        &topic,
        "paysim",
        &trained,
        ModelStatus::Challenger,
        (1, 3),
    )
    .await
    .unwrap();
    assert_eq!((first.version, second.version), (1, 2));
    let back = read_models(&kafka, &topic).await.unwrap();
    assert_eq!(back, vec![first, second]);
}
