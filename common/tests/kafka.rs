//! The broker does what the pipeline relies on: compaction settings and transactions.

use fraudstream_common::kafka::{ensure_topics, TopicSpec};
use fraudstream_common::testing::{local_kafka, read_topic, unique_name};
use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;
use std::time::Duration;

#[tokio::test]
async fn models_topic_is_created_compacted() {
    let kafka = local_kafka();
    let admin = kafka.admin().unwrap();
    let topic = unique_name("models_compacted");
    ensure_topics(&admin, &[TopicSpec::new(&topic, 1).compacted()])
        .await
        .unwrap();
    // Creating it again is not an error (services call ensure_topics on every start).
    ensure_topics(&admin, &[TopicSpec::new(&topic, 1).compacted()])
        .await
        .unwrap();
    let configs = admin
        .describe_configs(&[ResourceSpecifier::Topic(&topic)], &AdminOptions::new())
        .await
        .unwrap();
    let resource = configs.into_iter().next().unwrap().unwrap();
    let policy = resource.get("cleanup.policy").and_then(|e| e.value.clone());
    assert_eq!(policy.as_deref(), Some("compact"));
}

#[tokio::test]
async fn aborted_transaction_is_invisible_to_read_committed() {
    let kafka = local_kafka();
    let topic = unique_name("txn_abort");
    ensure_topics(&kafka.admin().unwrap(), &[TopicSpec::new(&topic, 1)])
        .await
        .unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = kafka
        .client_config()
        .unwrap()
        .set("transactional.id", unique_name("txn"))
        .create()
        .unwrap();
    let t = Duration::from_secs(30);
    producer.init_transactions(t).unwrap();

    producer.begin_transaction().unwrap();
    for i in 0..10 {
        let v = format!("aborted-{i}");
        producer
            .send(BaseRecord::<(), _>::to(&topic).payload(&v))
            .unwrap();
    }
    producer.flush(t).unwrap();
    producer.abort_transaction(t).unwrap();

    producer.begin_transaction().unwrap();
    for i in 0..5 {
        let v = format!("committed-{i}");
        producer
            .send(BaseRecord::<(), _>::to(&topic).payload(&v))
            .unwrap();
    }
    producer.commit_transaction(t).unwrap();

    // read_committed sees exactly the 5 committed records, in order.
    let committed = read_topic(&kafka, &topic, true, 15, Duration::from_secs(8))
        .await
        .unwrap();
    let values: Vec<String> = committed
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(
        values,
        (0..5).map(|i| format!("committed-{i}")).collect::<Vec<_>>()
    );

    // read_uncommitted sees the aborted ones too: the abort really wrote them to the log.
    let all = read_topic(&kafka, &topic, false, 15, Duration::from_secs(8))
        .await
        .unwrap();
    assert_eq!(all.len(), 15);
}

#[test]
fn bad_extra_property_names_the_fix() {
    let mut kafka = local_kafka();
    kafka.extra = vec!["security.protocol".into()];
    let err = kafka.client_config().unwrap_err().to_string();
    assert!(err.contains("KEY=VALUE"), "{err}");
}

/// Keeps the lag librdkafka's statistics report, as the scorer's and the sink's contexts do.
struct LagContext(std::sync::Mutex<Vec<(i32, i64)>>);

impl rdkafka::ClientContext for LagContext {
    fn stats(&self, stats: rdkafka::Statistics) {
        let lags = fraudstream_common::kafka::lag_from_statistics(&stats);
        *self.0.lock().unwrap() = lags.into_iter().map(|(_, p, lag)| (p, lag)).collect();
    }
}

impl rdkafka::consumer::ConsumerContext for LagContext {}

/// The lag comes from the statistics librdkafka delivers during `poll` (no broker request on
/// the polling thread): 100 records, 40 consumed, 60 behind.
#[tokio::test]
async fn lag_is_reported_from_statistics_without_a_broker_request() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let kafka = local_kafka();
    let topic = unique_name("lag_stats");
    ensure_topics(&kafka.admin().unwrap(), &[TopicSpec::new(&topic, 1)])
        .await
        .unwrap();
    produce(&kafka, &topic, 100);
    let consumer: BaseConsumer<LagContext> = kafka
        .client_config()
        .unwrap()
        .set("group.id", unique_name("lag_stats"))
        .set("statistics.interval.ms", "100")
        .set("max.poll.interval.ms", "60000")
        .create_with_context(LagContext(Default::default()))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut consumed = 0;
    while consumed < 40 {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m.unwrap();
            consumed += 1;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Paused: polling serves the statistics (a record fetched before the pause may still
        // come, and is counted).
        consumer.pause(&consumer.assignment().unwrap()).unwrap();
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            consumed += 1;
        }
        if consumer.context().0.lock().unwrap().as_slice() == [(0, 100 - consumed)] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lag reported: {:?}",
            consumer.context().0.lock().unwrap()
        );
    }
}

/// A range read hands over exactly the records asked for; a range that cannot be read to its end
/// (here: past the last record) is an error saying how far it got, never a short read taken for
/// the whole (a state rebuilt from part of its range, or dead letters missing from a batch).
#[tokio::test]
async fn a_range_read_is_whole_or_an_error_that_says_how_far_it_got() {
    use fraudstream_common::kafka::read_partition_range;
    use fraudstream_common::CommonError;
    let kafka = local_kafka();
    let topic = unique_name("range_read");
    ensure_topics(&kafka.admin().unwrap(), &[TopicSpec::new(&topic, 1)])
        .await
        .unwrap();
    produce(&kafka, &topic, 10);
    let reader = kafka.range_reader(&unique_name("range_read")).unwrap();
    let read = |from, end, timeout| {
        let mut offsets = Vec::new();
        let result = read_partition_range(&reader, &topic, 0, from, end, timeout, |m| {
            offsets.push(m.offset())
        });
        (result, offsets)
    };
    let long = Duration::from_secs(30);
    let (result, offsets) = read(3, 7, long);
    result.unwrap();
    assert_eq!(offsets, vec![3, 4, 5, 6]);
    let (result, offsets) = read(0, 10, long);
    result.unwrap();
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());

    let (result, offsets) = read(5, 15, Duration::from_secs(2));
    assert_eq!(offsets, (5..10).collect::<Vec<_>>());
    match result {
        Err(CommonError::RangeIncomplete {
            from, end, reached, ..
        }) => assert_eq!((from, end, reached), (5, 15, 10)),
        other => panic!("expected RangeIncomplete, got {other:?}"),
    }
}

/// `n` records, "r0" to "r{n-1}", on `topic`, acknowledged.
fn produce(kafka: &fraudstream_common::kafka::KafkaArgs, topic: &str, n: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka.client_config().unwrap().create().unwrap();
    for i in 0..n {
        let v = format!("r{i}");
        producer
            .send(BaseRecord::<(), _>::to(topic).payload(&v))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}
