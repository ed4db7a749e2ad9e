//! The simulator's output, judged the way a user compares a file with PaySim's published figures.

use fraudstream_schemas::TransactionType;
use paysim::profile::{Drift, Profile};
use paysim::simulate::{simulate, simulate_with, SimConfig, SimSummary, PAYSIM_TYPE_SHARES};
use paysim::stats::FileStats;

#[test]
fn one_million_rows_look_like_paysim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paysim.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let summary = simulate(1_000_000, 7, &mut out, |_| {}).unwrap();
    drop(out);
    assert_eq!(summary.rows, 1_000_000);

    let stats = FileStats::of_file(&path).unwrap();
    assert_eq!(stats.rows, 1_000_000, "every row parses back");
    assert!(stats.bad_rows.is_empty(), "{:?}", stats.bad_rows.first());
    assert_eq!((stats.first_step, stats.last_step), (1, 744));
    for (i, t) in TransactionType::ALL.iter().enumerate() {
        let share = stats.type_share(*t);
        assert!(
            (share - PAYSIM_TYPE_SHARES[i]).abs() <= 0.02,
            "{t}: {share:.4} vs PaySim {:.4}",
            PAYSIM_TYPE_SHARES[i]
        );
    }
    let fraud_rate = stats.fraud() as f64 / stats.rows as f64;
    assert!(
        (0.0008..=0.002).contains(&fraud_rate),
        "fraud rate {fraud_rate}"
    );
    assert_eq!(stats.fraud(), summary.fraud_rows);
    for t in [
        TransactionType::Payment,
        TransactionType::Debit,
        TransactionType::CashIn,
    ] {
        assert_eq!(
            stats.fraud_by_type[TransactionType::ALL.iter().position(|x| *x == t).unwrap()],
            0,
            "no fraud in {t}"
        );
    }
    assert_eq!(
        stats.inconsistent_normal, 0,
        "balances add up for every non-fraud row"
    );
}

#[test]
fn same_seed_same_file_other_seed_other_file() {
    let run = |seed| {
        let mut out = Vec::new();
        simulate(20_000, seed, &mut out, |_| {}).unwrap();
        out
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

/// Rows of a simulated file, by reading it back as a user would.
fn rows_of(cfg: &SimConfig) -> (Vec<paysim::PaySimRow>, SimSummary) {
    let mut out = Vec::new();
    let summary = simulate_with(cfg, &mut out, |_| {}).unwrap();
    let mut reader = paysim::CsvReader::new("simulated", std::io::Cursor::new(out)).unwrap();
    let mut rows = Vec::new();
    while let Some((_, row)) = reader.next_row().unwrap() {
        rows.push(row.expect("every row parses"));
    }
    (rows, summary)
}

fn realistic(rows: u64, drifts: Vec<Drift>) -> SimConfig {
    SimConfig {
        rows,
        seed: 5,
        profile: Profile::Realistic,
        drifts,
    }
}

#[test]
fn the_realistic_profile_keeps_paysims_shape_without_its_tells() {
    let (rows, summary) = rows_of(&realistic(1_000_000, Vec::new()));
    let stats = {
        let mut s = FileStats::default();
        rows.iter().for_each(|r| s.add(r));
        s
    };
    for (i, t) in TransactionType::ALL.iter().enumerate() {
        let share = stats.type_share(*t);
        assert!(
            (share - PAYSIM_TYPE_SHARES[i]).abs() <= 0.02,
            "{t}: {share:.4}"
        );
    }
    let fraud_rate = stats.fraud() as f64 / stats.rows as f64;
    assert!(
        (0.0008..=0.0025).contains(&fraud_rate),
        "fraud rate {fraud_rate}"
    );
    assert_eq!(stats.fraud(), summary.fraud_rows);
    let moves = |r: &&paysim::PaySimRow| {
        matches!(
            r.tx_type,
            TransactionType::Transfer | TransactionType::CashOut
        )
    };
    assert!(
        rows.iter().filter(|r| r.is_fraud).all(|r| moves(&r)),
        "fraud only in TRANSFER/CASH_OUT"
    );
    assert!(
        summary.unreported_rows > 0,
        "some takeovers are never reported"
    );

    // An emptied account is no longer a sign of fraud: most are customers moving their money.
    let emptied: Vec<_> = rows
        .iter()
        .filter(moves)
        .filter(|r| r.oldbalance_org > 0.0 && r.newbalance_orig == 0.0)
        .collect();
    let fraud_emptied = emptied.iter().filter(|r| r.is_fraud).count();
    assert!(
        fraud_emptied * 2 < emptied.len(),
        "{fraud_emptied} of {} emptied accounts are fraud",
        emptied.len()
    );
    // Nor are destination balances of 0/0: normal rows have them too, fraud often does not.
    let transfers: Vec<_> = rows
        .iter()
        .filter(|r| r.tx_type == TransactionType::Transfer)
        .collect();
    let share = |fraud: bool| {
        let group: Vec<_> = transfers.iter().filter(|r| r.is_fraud == fraud).collect();
        let zero = group
            .iter()
            .filter(|r| r.oldbalance_dest == 0.0 && r.newbalance_dest == 0.0)
            .count();
        zero as f64 / group.len() as f64
    };
    assert!(
        share(false) > 0.2 && share(true) < 0.6,
        "0/0 destinations: normal {:.2}, fraud {:.2}",
        share(false),
        share(true)
    );
}

#[test]
fn card_testing_starts_at_its_step_and_doubles_the_takeovers() {
    let drift: Drift = "card-testing@400".parse().unwrap();
    let (rows, summary) = rows_of(&realistic(600_000, vec![drift]));
    let (plain, _) = rows_of(&realistic(600_000, Vec::new()));
    let probe = |r: &&paysim::PaySimRow| {
        r.is_fraud && r.tx_type == TransactionType::Transfer && r.amount <= 20.0
    };
    let probes: Vec<_> = rows.iter().filter(probe).collect();
    assert!(probes.len() > 20, "{} probes", probes.len());
    assert!(
        probes.iter().all(|r| r.step >= 400),
        "no probe before the drift starts"
    );
    assert!(
        plain.iter().filter(probe).count() == 0,
        "no probes without the drift"
    );
    assert!(summary.drift_rows >= probes.len() as u64);
    let late_fraud = |rows: &[paysim::PaySimRow]| {
        rows.iter().filter(|r| r.is_fraud && r.step >= 400).count() as f64
    };
    let ratio = late_fraud(&rows) / late_fraud(&plain);
    assert!(ratio > 1.6, "fraud after the drift: {ratio:.2}x");
}
