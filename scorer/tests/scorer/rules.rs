use crate::support::*;
use fraudstream_common::rules::decide;
use fraudstream_schemas::{Rule, RuleAction, RuleHit};

fn rule(id: &str, expression: &str, action: RuleAction) -> Rule {
    Rule {
        id: id.into(),
        version: 1,
        expression: expression.into(),
        action,
        description: format!("test rule {id}"),
        owner: "fraud-team".into(),
        enabled: true,
        updated_at: 0,
    }
}

/// The hits the three good rules give `p` (from the fields a prediction carries), in id order.
fn expected_hits(p: &Prediction) -> Vec<RuleHit> {
    let hit = |id: &str, action| RuleHit {
        id: id.into(),
        version: 1,
        action,
    };
    let mut hits = Vec::new();
    if p.name_orig.contains('7') {
        hits.push(hit("allow-sevens", RuleAction::Suppress));
    }
    if p.tx_type.as_str() == "TRANSFER" && p.amount > 100_000.0 {
        hits.push(hit("big-transfer", RuleAction::Alert));
    }
    if p.tx_type.as_str() == "CASH_OUT" && p.score < 0.05 {
        hits.push(hit("watch-band", RuleAction::Tag));
    }
    hits
}

/// Two scorers serve a stream; rules published mid-stream (ALERT, SUPPRESS, TAG, and one that does
/// not compile) are in force on both from the next batch: every later prediction records exactly
/// the rules it matched and the rule set version; SUPPRESS beats the model and ALERT; the bad rule
/// is refused while the others serve; alerts follow the combined verdict, on the alerts topic too.
#[tokio::test(flavor = "multi_thread")]
async fn rules_published_mid_stream_decide_on_every_scorer() {
    let kafka = local_kafka();
    let t = Topics::create(&kafka, "rules", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = simulate(dir.path(), 20_000, 33);
    let codec = Codec::new(&kafka.schema_registry);
    let raw: FutureProducer = kafka.client_config().unwrap().create().unwrap();
    // A low threshold: plenty of model alerts for the suppress rule to overrule.
    let champion = model_record(1, &train(&csv, |fraud, _| fraud), 0.05);
    let payload = codec.encode(&t.models, &champion).await.unwrap();
    send_raw(&raw, &t.models, "paysim", &payload).await;
    let mut scorers = [
        scorer(&kafka, &t, &unique_name("rules-a")),
        scorer(&kafka, &t, &unique_name("rules-b")),
    ];
    let half = 5_000;
    let published = |prefix: &str| {
        publish(&kafka, &csv, &t)
            .args(["--limit", &half.to_string(), "--id-prefix", prefix])
            .status()
            .unwrap()
            .success()
    };
    assert!(published("a"));
    let (quiet, most) = (Duration::from_secs(2), Duration::from_secs(90));
    drain(&kafka, &t.predictions, half, quiet, most);

    let rules = [
        rule(
            "big-transfer",
            "type == 'TRANSFER' && amount > 100000",
            RuleAction::Alert,
        ),
        rule(
            "allow-sevens",
            "name_orig.contains('7')",
            RuleAction::Suppress,
        ),
        rule(
            "watch-band",
            "type == 'CASH_OUT' && score < 0.05",
            RuleAction::Tag,
        ),
        rule("broken", "amount >", RuleAction::Alert),
    ];
    for r in &rules {
        let payload = codec.encode(&t.rules, r).await.unwrap();
        send_raw(&raw, &t.rules, &r.id, &payload).await;
    }
    // The rules watcher reads them within milliseconds; they apply before the next batch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(published("b"));
    let messages = drain(&kafka, &t.predictions, 2 * half, quiet, most);
    let alerts = drain(&kafka, &t.alerts, 1, quiet, most);
    for s in &mut scorers {
        terminate_and_wait(s);
    }

    let mut seen = HashSet::new();
    let (mut suppressed, mut raised, mut tagged, mut b) = (0, 0, 0, 0);
    let mut alerting = HashSet::new();
    for m in &messages {
        let p: Prediction = codec.decode(m.payload().unwrap()).await.unwrap();
        assert!(
            seen.insert(p.transaction_id.clone()),
            "two predictions for {}",
            p.transaction_id
        );
        let model_alert = p.score >= p.threshold;
        if p.is_alert {
            alerting.insert(p.transaction_id.clone());
        }
        if p.transaction_id.starts_with("a-") {
            assert_eq!(
                (p.rules_version, p.rule_hits.len()),
                (0, 0),
                "before any rule"
            );
            assert_eq!(p.is_alert, model_alert);
            continue;
        }
        b += 1;
        // Three good rules at offsets 0..=2; the refused one (offset 3) changes nothing.
        assert_eq!(
            p.rules_version, 3,
            "{}: the rule set in force",
            p.transaction_id
        );
        let hits = expected_hits(&p);
        assert_eq!(
            p.rule_hits, hits,
            "{}: the rules it matched",
            p.transaction_id
        );
        assert_eq!(
            p.is_alert,
            decide(model_alert, &hits),
            "{}",
            p.transaction_id
        );
        let has = |a| hits.iter().any(|h| h.action == a);
        suppressed += usize::from(model_alert && has(RuleAction::Suppress));
        raised += usize::from(!model_alert && has(RuleAction::Alert) && !has(RuleAction::Suppress));
        tagged += usize::from(has(RuleAction::Tag));
    }
    assert_eq!(
        (seen.len(), b),
        (2 * half, half),
        "one prediction per transaction"
    );
    assert!(
        suppressed > 0 && raised > 0 && tagged > 0,
        "every action exercised: {suppressed} suppressed, {raised} raised, {tagged} tagged"
    );
    let mut alert_ids = HashSet::new();
    for m in &alerts {
        let p: Prediction = codec.decode(m.payload().unwrap()).await.unwrap();
        assert!(alert_ids.insert(p.transaction_id.clone()));
        if p.transaction_id.starts_with("b-") {
            assert_eq!(
                p.rule_hits,
                expected_hits(&p),
                "an alert carries its rule hits"
            );
        }
    }
    assert_eq!(
        alert_ids, alerting,
        "the alerts topic holds exactly the alerting predictions"
    );
}
