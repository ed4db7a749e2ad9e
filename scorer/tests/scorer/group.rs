use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn three_scorers_one_killed_exactly_one_prediction_each_and_a_live_model_swap() {
    let kafka = local_kafka();
    let t = Topics::create(&kafka, "scorer", 6).await;

    // Data and a first model.
    let dir = tempfile::tempdir().unwrap();
    let (all, _) = simulate(dir.path(), 300_000, 5);
    let (hist, stream) = (
        dir.path().join("historical.csv"),
        dir.path().join("stream.csv"),
    );
    paysim::split::split(&all, 0.9, &hist, &stream).unwrap();
    let model_text = train(&hist, |is_fraud, _| is_fraud);
    let codec = Codec::new(&kafka.schema_registry);
    let raw: FutureProducer = kafka.client_config().unwrap().create().unwrap();
    let v1 = codec
        .encode(&t.models, &model_record(1, &model_text, 0.5))
        .await
        .unwrap();
    send_raw(&raw, &t.models, "paysim", &v1).await;

    let mut scorers: Vec<Process> = (0..3)
        .map(|i| scorer(&kafka, &t, &unique_name(&format!("scorer{i}"))))
        .collect();

    // 200k transactions at 40k/s (the stream part, looped with fresh ids).
    let n = 200_000u64;
    let mut publisher = publish(&kafka, &stream, &t)
        .args([
            "--rate",
            "40000",
            "--limit",
            &n.to_string(),
            "--loop",
            "--id-prefix",
            "s",
        ])
        .spawn()
        .unwrap();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Malformed records and refused models, mid-stream.
    for i in 0..20 {
        send_raw(&raw, &t.transactions, &format!("C{i}"), b"not avro at all").await;
    }
    send_raw(&raw, &t.models, "paysim", b"\x00\x00\x00\x00\x01garbage").await;
    let bad_text = codec
        .encode(
            &t.models,
            &model_record(7, "tree\nthis is not a model", 0.5),
        )
        .await
        .unwrap();
    send_raw(&raw, &t.models, "paysim", &bad_text).await;
    let mut wrong_features = model_record(8, &model_text, 0.5);
    wrong_features.feature_names.pop();
    send_raw(
        &raw,
        &t.models,
        "paysim",
        &codec.encode(&t.models, &wrong_features).await.unwrap(),
    )
    .await;

    tokio::time::sleep(Duration::from_millis(1000)).await;
    scorers[0].kill().unwrap(); // SIGKILL, mid-stream, mid-transaction
    scorers[0].wait().unwrap();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let v2 = codec
        .encode(&t.models, &model_record(2, &model_text, 0.9))
        .await
        .unwrap();
    send_raw(&raw, &t.models, "paysim", &v2).await;
    let v2_sent_at = fraudstream_common::now_millis();

    let published = tokio::task::spawn_blocking(move || publisher.wait().unwrap());
    assert!(
        published.await.unwrap().success(),
        "every transaction was acknowledged"
    );

    let messages = drain_blocking(
        &kafka,
        &t.predictions,
        n as usize,
        Duration::from_secs(8),
        Duration::from_secs(150),
    )
    .await;
    let mut ids = HashSet::new();
    let mut versions: HashMap<i32, u64> = HashMap::new();
    let mut alerts = 0;
    for m in &messages {
        let p: Prediction = codec.decode(m.payload().unwrap()).await.unwrap();
        assert!(
            ids.insert(p.transaction_id.clone()),
            "duplicate prediction for {}",
            p.transaction_id
        );
        *versions.entry(p.model_version).or_default() += 1;
        assert!((0.0..=1.0).contains(&p.score));
        assert_eq!(p.is_alert, p.score >= p.threshold);
        if p.is_alert {
            alerts += 1;
            assert_eq!(p.top_reasons.len(), 3, "an alert carries its top 3 reasons");
        }
        if p.scored_at > v2_sent_at + 5_000 {
            assert_eq!(
                p.model_version, 2,
                "5 s after v2 was published every prediction uses it"
            );
        }
        assert!(
            p.model_version == 1 || p.model_version == 2,
            "refused models never serve: {}",
            p.model_version
        );
    }
    assert_eq!(
        ids.len() as u64,
        n,
        "exactly one prediction per transaction (versions {versions:?})"
    );
    assert!(
        versions.get(&2).copied().unwrap_or(0) > 0,
        "the new model was picked up: {versions:?}"
    );
    assert!(alerts > 0, "fraud in the stream raises alerts");

    let alert_messages = drain(
        &kafka,
        &t.alerts,
        alerts,
        Duration::from_secs(3),
        Duration::from_secs(30),
    );
    assert_eq!(
        alert_messages.len(),
        alerts,
        "every alerting prediction is on the alerts topic, once"
    );

    let dead = drain(
        &kafka,
        &t.dlq,
        20,
        Duration::from_secs(3),
        Duration::from_secs(30),
    );
    assert_eq!(dead.len(), 20, "every malformed record is in the DLQ, once");
    for m in &dead {
        let headers = headers_map(m);
        assert_eq!(headers["source.topic"], t.transactions);
        assert!(headers["error"].contains("magic byte"), "{headers:?}");
        assert!(
            headers["source.offset"].parse::<i64>().is_ok()
                && headers["source.partition"].parse::<i32>().is_ok()
        );
        assert_eq!(m.payload().unwrap(), b"not avro at all");
    }

    // The survivors stop cleanly on SIGTERM.
    for s in scorers.iter_mut().skip(1) {
        Command::new("kill")
            .args(["-TERM", &s.id().to_string()])
            .status()
            .unwrap();
        assert!(s.wait().unwrap().success(), "a scorer exits 0 on SIGTERM");
    }
}
