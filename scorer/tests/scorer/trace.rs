use crate::support::*;

/// The `traceparent` header of each message that has one, by transaction id.
async fn traceparents<T: fraudstream_schemas::AvroRecord>(
    codec: &Codec,
    messages: &[OwnedMessage],
    id: impl Fn(T) -> String,
) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for m in messages {
        if let Some(tp) = headers_map(m).remove("traceparent") {
            let record = codec.decode(m.payload().unwrap()).await.unwrap();
            found.insert(id(record), tp);
        }
    }
    found
}

/// With traces exported, one transaction in `--trace-every` carries a `traceparent` from the
/// producer, and its prediction carries the scorer's span of the same trace: a trace does not
/// stop at the topic.
#[tokio::test(flavor = "multi_thread")]
async fn a_sampled_transaction_keeps_its_trace_through_the_scorer() {
    let kafka = local_kafka();
    let t = Topics::create(&kafka, "trace", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let (csv, rows) = simulate(dir.path(), 5_000, 3);
    let codec = Codec::new(&kafka.schema_registry);
    let raw: FutureProducer = kafka.client_config().unwrap().create().unwrap();
    let model = model_record(1, &train(&csv, |fraud, _| fraud), 0.5);
    let record = codec.encode(&t.models, &model).await.unwrap();
    send_raw(&raw, &t.models, "paysim", &record).await;
    let endpoint = otlp_sink();
    let status = publish(&kafka, &csv, &t)
        .args(["--trace-every", "100"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .status()
        .unwrap();
    assert!(status.success());
    let scored = scorer_command(&kafka, &t, &unique_name("traced"))
        .args(["--stop-after", &rows.to_string()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        // Spans are info-level: a filter that drops them drops the trace too.
        .env("RUST_LOG", "warn,scorer=info")
        .status()
        .unwrap();
    assert!(scored.success());

    let n = rows as usize;
    let (short, long) = (Duration::from_secs(1), Duration::from_secs(60));
    let input = drain(&kafka, &t.transactions, n, short, long);
    let output = drain(&kafka, &t.predictions, n, short, long);
    let sent = traceparents(&codec, &input, |t: Transaction| t.transaction_id).await;
    let scored = traceparents(&codec, &output, |p: Prediction| p.transaction_id).await;
    assert_eq!(sent.len(), n.div_ceil(100), "one in 100 is traced");
    assert!(
        sent.keys().eq(scored.keys()),
        "exactly the traced transactions' predictions are traced"
    );
    for (id, upstream) in &sent {
        let (up, down): (Vec<&str>, Vec<&str>) = (
            upstream.split('-').collect(),
            scored[id].split('-').collect(),
        );
        assert_eq!(
            up[1], down[1],
            "{id}: the prediction continues the producer's trace"
        );
        assert_ne!(up[2], down[2], "{id}: under a span of the scorer's own");
    }
}
