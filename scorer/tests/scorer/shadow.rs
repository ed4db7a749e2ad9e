use crate::support::*;
use fraudstream_schemas::ModelStatus;

/// The predictions of `messages` by transaction id (none twice).
async fn by_id(codec: &Codec, messages: &[OwnedMessage]) -> HashMap<String, Prediction> {
    let mut found = HashMap::new();
    for m in messages {
        let p: Prediction = codec.decode(m.payload().unwrap()).await.unwrap();
        let id = p.transaction_id.clone();
        assert!(
            found.insert(id.clone(), p).is_none(),
            "two predictions for {id}"
        );
    }
    found
}

/// A challenger published next to the champion is scored in shadow: every prediction carries its
/// score and version while alerts stay the champion's decision; once the challenger is retired,
/// no prediction carries it.
#[tokio::test(flavor = "multi_thread")]
async fn a_challenger_is_shadow_scored_until_it_is_retired() {
    let kafka = local_kafka();
    let t = Topics::create(&kafka, "shadow", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = simulate(dir.path(), 20_000, 21);
    let codec = Codec::new(&kafka.schema_registry);
    let raw: FutureProducer = kafka.client_config().unwrap().create().unwrap();
    let champion = model_record(1, &train(&csv, |fraud, _| fraud), 0.5);
    // Another model (it reads the account's history), so its scores differ from the champion's.
    let challenger = ModelRecord {
        status: ModelStatus::Challenger,
        ..model_record(2, &train(&csv, |_, a| a.count_window > 0.0), 0.5)
    };
    for record in [&champion, &challenger] {
        let payload = codec.encode(&t.models, record).await.unwrap();
        send_raw(&raw, &t.models, "paysim", &payload).await;
    }
    let mut scorer = scorer(&kafka, &t, &unique_name("shadow"));
    let half = 5_000;
    let published = |prefix: &str| {
        publish(&kafka, &csv, &t)
            .args(["--limit", &half.to_string(), "--id-prefix", prefix])
            .status()
            .unwrap()
            .success()
    };
    assert!(published("a"));
    let (quiet, most) = (Duration::from_secs(2), Duration::from_secs(60));
    let first = by_id(&codec, &drain(&kafka, &t.predictions, half, quiet, most)).await;
    assert_eq!(first.len(), half, "one prediction per transaction");
    let mut differ = 0;
    for p in first.values() {
        assert_eq!(
            p.challenger_version,
            Some(2),
            "{}: shadow-scored",
            p.transaction_id
        );
        let shadow = p.challenger_score.expect("a challenger score");
        assert!((0.0..=1.0).contains(&shadow));
        assert_eq!(p.model_version, 1);
        assert_eq!(
            p.is_alert,
            p.score >= p.threshold,
            "the champion decides alerts"
        );
        differ += usize::from(shadow != p.score);
    }
    assert!(
        differ > half / 10,
        "the challenger's own scores ({differ} differ)"
    );

    let retired = ModelRecord {
        status: ModelStatus::Retired,
        ..challenger.clone()
    };
    let payload = codec.encode(&t.models, &retired).await.unwrap();
    send_raw(&raw, &t.models, "paysim", &payload).await;
    // The model watcher reads it within milliseconds; it applies before the next batch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(published("b"));
    let all = by_id(
        &codec,
        &drain(&kafka, &t.predictions, 2 * half, quiet, most),
    )
    .await;
    terminate_and_wait(&mut scorer);
    let second: Vec<_> = all
        .values()
        .filter(|p| p.transaction_id.starts_with("b-"))
        .collect();
    assert_eq!(second.len(), half);
    for p in second {
        assert_eq!(
            (p.challenger_version, p.challenger_score),
            (None, None),
            "{}: scored after the challenger was retired",
            p.transaction_id
        );
    }
}
