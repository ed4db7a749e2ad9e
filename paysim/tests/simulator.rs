//! The simulator's output, judged the way a user compares a file with PaySim's published figures.

use fraudstream_schemas::TransactionType;
use paysim::simulate::{simulate, PAYSIM_TYPE_SHARES};
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
