use super::*;
use crate::features::{FEATURE_NAMES, N_FEATURES};

fn rule(id: &str, expression: &str, action: RuleAction) -> Rule {
    Rule {
        id: id.into(),
        version: 1,
        expression: expression.into(),
        action,
        description: String::new(),
        owner: String::new(),
        enabled: true,
        updated_at: 0,
    }
}

fn features(pairs: &[(&str, f64)]) -> Vec<f64> {
    let mut f = vec![0.0; N_FEATURES];
    for (name, v) in pairs {
        f[FEATURE_NAMES.iter().position(|n| n == name).unwrap()] = *v;
    }
    f
}

fn input<'a>(f: &'a [f64], tx_type: &str) -> Input<'a> {
    Input {
        features: f,
        score: 0.25,
        tx_type: tx_type.parse().unwrap(),
        name_orig: "C123",
        name_dest: "M456",
        is_flagged_fraud: false,
    }
}

fn eval(expression: &str, i: &Input<'_>) -> bool {
    CompiledRule::new(rule("r", expression, RuleAction::Tag))
        .unwrap_or_else(|e| panic!("{e}"))
        .matches(i)
}

#[test]
fn expressions_evaluate_as_cel_defines_them() {
    let f = features(&[("amount", 250_000.0), ("orig_tx_count_window", 0.0)]);
    let x = input(&f, "TRANSFER");
    let cases = [
        ("type == 'TRANSFER' && amount > 200000", true),
        ("type == \"TRANSFER\" && amount > 300000.0", false),
        ("tx_type in ['CASH_OUT', 'TRANSFER']", true),
        ("type in ['PAYMENT']", false),
        ("amount / 1000 >= 250 && !(orig_tx_count_window > 0)", true),
        (
            "name_dest.startsWith('M') && name_orig.endsWith('23')",
            true,
        ),
        ("name_orig.contains('99') || score > 0.2", true),
        ("size(name_orig) == 4 && int(score * 10) == 2", true),
        ("(amount > 1e6 ? 1 : 2) == 2", true),
        ("amount % 7 == 250000 % 7 && -amount < 0", true),
        (
            "orig_tx_count_window in [0, 1] && is_flagged_fraud == false",
            true,
        ),
        ("type != 'TRANSFER' || false", false),
        (
            "'TRANSFER' == type && !(type in ['DEBIT', 'CASH_IN'])",
            true,
        ),
    ];
    for (expression, want) in cases {
        assert_eq!(eval(expression, &x), want, "{expression}");
    }
}

#[test]
fn bad_rules_are_refused_with_the_reason() {
    let refused = |expression: &str| {
        CompiledRule::new(rule("bad", expression, RuleAction::Alert))
            .unwrap_err()
            .to_string()
    };
    assert!(
        refused("amount >").contains("does not parse"),
        "{}",
        refused("amount >")
    );
    let unknown = refused("amount > 5 && emptied");
    assert!(unknown.contains("unknown field `emptied`"), "{unknown}");
    assert!(
        unknown.contains("orig_emptied"),
        "the error lists the fields: {unknown}"
    );
    assert!(refused("amount").contains("not a condition"));
    assert!(refused("type > 5").contains("needs a number, got a string"));
    assert!(refused("type == 5").contains("compares a string with a number"));
    let typo = refused("type == 'TRANSFERS'");
    assert!(
        typo.contains("no transaction type \"TRANSFERS\"") && typo.contains("CASH_OUT"),
        "{typo}"
    );
    assert!(refused("type in ['PAYMENT', 'WIRE']").contains("no transaction type \"WIRE\""));
    assert!(refused("matches(name_orig, 'C.*')").contains("`matches` is not supported"));
    assert!(refused("tx.amount > 5").contains("fields are plain names"));
}

#[test]
fn suppress_beats_alert_and_the_model_tag_changes_nothing() {
    let hit = |action| RuleHit {
        id: "r".into(),
        version: 1,
        action,
    };
    assert!(!decide(false, &[]));
    assert!(decide(true, &[]));
    assert!(decide(false, &[hit(RuleAction::Alert)]));
    assert!(!decide(true, &[hit(RuleAction::Suppress)]));
    assert!(!decide(
        false,
        &[hit(RuleAction::Alert), hit(RuleAction::Suppress)]
    ));
    assert!(!decide(false, &[hit(RuleAction::Tag)]));
    assert!(decide(true, &[hit(RuleAction::Tag)]));
}

#[test]
fn a_refused_rule_leaves_the_set_as_it_was() {
    let mut set = RuleSet::default();
    set.apply(
        "big",
        Some(rule("big", "amount > 100", RuleAction::Alert)),
        0,
    )
    .unwrap();
    set.apply(
        "allow",
        Some(rule("allow", "name_orig == 'C123'", RuleAction::Suppress)),
        1,
    )
    .unwrap();
    assert_eq!((set.active(), set.version()), (2, 2));
    let mut bad = rule("big", "amount >>> 1", RuleAction::Alert);
    bad.version = 2;
    assert!(set.apply("big", Some(bad), 2).is_err());
    assert_eq!(set.version(), 2, "a refused change is not a new rule set");
    let f = features(&[("amount", 500.0)]);
    let mut hits = Vec::new();
    set.evaluate(&input(&f, "PAYMENT"), &mut hits);
    let ids: Vec<_> = hits.iter().map(|h| (h.id.as_str(), h.version)).collect();
    assert_eq!(ids, [("allow", 1), ("big", 1)], "id order, the old version");
    let mut disabled = rule("allow", "true", RuleAction::Suppress);
    disabled.enabled = false;
    set.apply("allow", Some(disabled), 3).unwrap();
    set.apply("big", None, 4).unwrap();
    assert_eq!(
        (set.active(), set.rules().count(), set.version()),
        (0, 1, 5)
    );
}
