use crate::support::*;
use rdkafka::admin::AdminOptions;

/// Records deleted (retention) before they were scored leave the group's committed offset below
/// the log's start. A restarted scorer goes on from the log's start and scores every remaining
/// transaction once: it neither stops nor loops on the offset out of range, nor starts the
/// partition over. (librdkafka hands such a position back to the scorer, `auto.offset.reset=error`,
/// which commits what it sent and assigns the committed offsets, moved into the log.)
#[tokio::test(flavor = "multi_thread")]
async fn records_deleted_before_they_were_scored_are_skipped_and_the_rest_scored_once() {
    let kafka = local_kafka();
    let part = scored_in_part(&kafka, "deleted", 1, 6_000, 2_000).await;
    let (t, codec, n) = (&part.t, &part.codec, part.rows as i64);
    let committed = part.committed[&0];
    assert!(
        (2000..n - 2000).contains(&committed),
        "the first instance committed {committed} of {n}"
    );
    let deleted_up_to = committed + 1000;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&t.transactions, 0, rdkafka::Offset::Offset(deleted_up_to))
        .unwrap();
    kafka
        .admin()
        .unwrap()
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();

    let mut second = scorer(&kafka, t, &unique_name("second"));
    let expected = (n - 1000) as usize;
    let predictions = drain_blocking(
        &kafka,
        &t.predictions,
        expected,
        Duration::from_secs(3),
        Duration::from_secs(120),
    )
    .await;
    terminate_and_wait(&mut second);
    let ids = distinct_prediction_ids(codec, &predictions).await;
    assert_eq!(
        ids.len(),
        expected,
        "{committed} scored before the deletion and the {} after offset {deleted_up_to}, once each",
        n - deleted_up_to
    );
    assert_eq!(
        committed_offsets(&kafka, t, 1)[&0],
        n,
        "the second committed up to the end"
    );
}

/// A broker can lose a group's committed offsets (after a restart, the group coordinator once
/// answered "none" for partitions the group had committed, with no error: 77,600 duplicates in
/// a fault run). A scorer that committed them itself knows better: when a rebalance hands its
/// partitions back at the lost (here: rewound) offsets, it goes on from its own, and nothing is
/// scored twice.
#[tokio::test(flavor = "multi_thread")]
async fn offsets_the_group_lost_are_not_scored_again_by_the_scorer_that_committed_them() {
    let kafka = local_kafka();
    let t = Topics::create(&kafka, "lost", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let (csv, rows) = simulate(dir.path(), 3_000, 12);
    let model = train(&csv, |_, a| a.count_window > 0.0);
    let codec = publish_model(&kafka, &t, &model_record(1, &model, 0.5)).await;
    let publish_as = |prefix: &str| {
        let status = publish(&kafka, &csv, &t)
            .args(["--partitions", "2", "--id-prefix", prefix])
            .status()
            .unwrap();
        assert!(status.success(), "every transaction was acknowledged");
    };
    publish_as("lost-a");
    let mut s = scorer(&kafka, &t, &unique_name("keeper"));
    let quiet = Duration::from_secs(3);
    let first = drain_blocking(
        &kafka,
        &t.predictions,
        rows as usize,
        quiet,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(first.len() as u64, rows, "the first stream scored once");
    let end = wait_for_commits(&kafka, &t, rows as i64).await;

    rewind_group(&kafka, &t, 2);
    assert_eq!(
        committed_offsets(&kafka, &t, 2),
        HashMap::from([(0, 0), (1, 0)])
    );
    // Another member joins the group (for another topic): the scorer's partitions are handed back
    // to it at the group's offsets, which are now 0.
    rebalance_with_a_second_member(&kafka, &t).await;
    publish_as("lost-b");
    let all = drain_blocking(
        &kafka,
        &t.predictions,
        2 * rows as usize,
        quiet,
        Duration::from_secs(120),
    )
    .await;
    terminate_and_wait(&mut s);

    let ids = distinct_prediction_ids(&codec, &all).await;
    assert_eq!(ids.len() as u64, 2 * rows, "both streams scored, once each");
    let committed = committed_offsets(&kafka, &t, 2);
    assert_eq!(
        committed.values().sum::<i64>(),
        2 * end,
        "committed up to the end again"
    );
}

/// Waits until the group has committed `records` in all (both partitions); returns it.
async fn wait_for_commits(kafka: &KafkaArgs, t: &Topics, records: i64) -> i64 {
    let start = Instant::now();
    loop {
        let committed: i64 = committed_offsets(kafka, t, 2).values().sum();
        if committed >= records || start.elapsed() > Duration::from_secs(30) {
            assert_eq!(committed, records, "the scorer committed the whole stream");
            return committed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sets the group's committed offsets to 0 behind its member's back, as a broker that lost them
/// would answer: a transactional offset commit without a member (accepted from clients older than
/// KIP-447).
fn rewind_group(kafka: &KafkaArgs, t: &Topics, partitions: i32) {
    use rdkafka::producer::{BaseProducer, Producer};
    let producer: BaseProducer = kafka
        .client_config_with(&[("transactional.id", &unique_name("rewind"))])
        .unwrap()
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    producer.init_transactions(timeout).unwrap();
    producer.begin_transaction().unwrap();
    let outsider = group_client(kafka, t);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&t.transactions, p, rdkafka::Offset::Offset(0))
            .unwrap();
    }
    let metadata = outsider.group_metadata().unwrap();
    producer
        .send_offsets_to_transaction(&tpl, &metadata, timeout)
        .unwrap();
    producer.commit_transaction(timeout).unwrap();
}

/// A second member joins the scorer's group for the labels topic, stays 10 s and leaves: two
/// rebalances, each handing the scorer its partitions again.
async fn rebalance_with_a_second_member(kafka: &KafkaArgs, t: &Topics) {
    let (kafka, group, topic) = (kafka.clone(), t.group.clone(), t.labels.clone());
    tokio::task::spawn_blocking(move || {
        let member: BaseConsumer = kafka
            .client_config_with(&[("group.id", &group), ("session.timeout.ms", "10000")])
            .unwrap()
            .create()
            .unwrap();
        member.subscribe(&[&topic]).unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            member.poll(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
}
