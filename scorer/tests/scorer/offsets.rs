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
    let mut ids = HashSet::new();
    for m in &predictions {
        let p: Prediction = codec.decode(m.payload().unwrap()).await.unwrap();
        assert!(
            ids.insert(p.transaction_id.clone()),
            "duplicate prediction for {}",
            p.transaction_id
        );
    }
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
