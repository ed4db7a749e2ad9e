use crate::support::*;

/// An instance that takes over partitions rebuilds their per-account state from the input topic.
/// The model here is trained to read the account's history (its label is "this account was seen
/// in the window"), so a lost or wrong state shows in the scores: after a restart mid-stream,
/// every prediction must equal what an uninterrupted scorer computes, and some of those after the
/// restart must differ from what a scorer that lost its state would compute.
#[tokio::test(flavor = "multi_thread")]
async fn account_state_survives_a_restart() {
    let kafka = local_kafka();
    // The first instance scores part of the stream and stops cleanly; the second starts from
    // its offsets. (A partition may be read to its end before the other is started: the check
    // below that the test can fail covers that.)
    let ScoredInPart {
        t,
        codec,
        record,
        rows,
        committed,
    } = scored_in_part(&kafka, "state", 2, 60_000, 40_000).await;
    let n = rows as usize;
    let mut second = scorer(&kafka, &t, &unique_name("second"));
    let predictions = drain_blocking(
        &kafka,
        &t.predictions,
        n,
        Duration::from_secs(3),
        Duration::from_secs(120),
    )
    .await;
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(second.wait().unwrap().success());

    // What an uninterrupted scorer computes, and what one that lost the state at the restart would,
    // from the input topic itself (each partition in offset order, as the scorer reads it).
    let mut input = drain(
        &kafka,
        &t.transactions,
        n,
        Duration::from_secs(1),
        Duration::from_secs(60),
    );
    input.sort_by_key(|m| (m.partition(), m.offset()));
    assert_eq!(input.len(), n);
    let (mut kept, mut lost) = (Vec::new(), Vec::new());
    let (mut ids, mut after_restart) = (Vec::new(), Vec::new());
    let mut histories: HashMap<i32, (AccountHistory, AccountHistory)> = HashMap::new();
    for m in &input {
        let tx: Transaction = codec.decode(m.payload().unwrap()).await.unwrap();
        let (full, cut) = histories.entry(m.partition()).or_default();
        let restarted = m.offset() >= committed[&m.partition()];
        if m.offset() == committed[&m.partition()] {
            *cut = AccountHistory::default();
        }
        let view = TxView::from(&tx);
        push_features(
            &view,
            full.observe(&tx.name_orig, m.offset(), tx.step, tx.amount),
            &mut kept,
        );
        push_features(
            &view,
            cut.observe(&tx.name_orig, m.offset(), tx.step, tx.amount),
            &mut lost,
        );
        ids.push(tx.transaction_id);
        after_restart.push(restarted);
    }
    let model = LoadedModel::from_record(&record).unwrap();
    let (want, if_lost) = (model.predict(&kept).unwrap(), model.predict(&lost).unwrap());
    let sensitive = (0..n)
        .filter(|&i| after_restart[i] && want[i] != if_lost[i])
        .count();
    assert!(
        sensitive >= 20,
        "the test must be able to fail: only {sensitive} predictions after the restart depend on \
         state from before it"
    );

    let mut got: HashMap<String, f64> = HashMap::new();
    for m in &predictions {
        let p: Prediction = codec.decode(m.payload().unwrap()).await.unwrap();
        assert!(
            got.insert(p.transaction_id.clone(), p.score).is_none(),
            "duplicate prediction for {}",
            p.transaction_id
        );
    }
    assert_eq!(got.len(), n, "one prediction per transaction");
    let wrong: Vec<_> = (0..n)
        .filter(|&i| got.get(&ids[i]) != Some(&want[i]))
        .map(|i| {
            (
                &ids[i],
                got.get(&ids[i]),
                want[i],
                if_lost[i],
                after_restart[i],
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {n} predictions differ from an uninterrupted scorer's ({sensitive} depend on state \
         from before the restart); first (id, got, want, if state were lost, after restart): {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}
