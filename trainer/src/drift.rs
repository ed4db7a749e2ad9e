//! What a model was trained on, kept for drift monitoring: per feature, the deciles of its training
//! rows and the share of rows in each bin, and the same for the model's holdout scores. The
//! ClickHouse view `feature_drift` (deploy/clickhouse/003_drift.sql) bins live traffic alike and
//! reports each feature's population stability index against it.

use crate::{Examples, TrainerError};
use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::features::{FEATURE_NAMES, N_FEATURES};

/// The features the view can compute from a ClickHouse row (the per-account window features need
/// the account's history). `type` is the transaction type's index, in the one-hot columns' order.
const ROW_FEATURES: [&str; 6] = [
    "amount",
    "oldbalance_org",
    "newbalance_orig",
    "oldbalance_dest",
    "newbalance_dest",
    "hour_of_day",
];
const TYPE_COLUMNS: [&str; 5] = [
    "type_payment",
    "type_transfer",
    "type_cash_out",
    "type_debit",
    "type_cash_in",
];

/// One feature's reference: a value `v` is in bin `i` for the first `edges[i] >= v`, else in the
/// last; `expected[i]` is the share of reference values in bin `i`.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize)]
pub struct Reference {
    pub model_name: String,
    pub version: i32,
    pub feature: String,
    pub edges: Vec<f64>,
    pub expected: Vec<f64>,
    pub created_at: u32,
}

/// Decile edges of `values` (distinct, so a feature with many equal values has fewer bins) and
/// the share of `values` in each bin.
pub fn bins(values: &mut [f64]) -> (Vec<f64>, Vec<f64>) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return (Vec::new(), vec![1.0]);
    }
    // The k-th decile edge is the largest value of the lowest k tenths (bins include their edge).
    let mut edges: Vec<f64> = (1..10)
        .map(|k| values[(k * n / 10).saturating_sub(1).min(n - 1)])
        .collect();
    edges.dedup();
    if edges.last() == values.last() {
        // Nothing is above the top edge: that bin would always be empty.
        edges.pop();
    }
    let mut counts = vec![0usize; edges.len() + 1];
    for v in values.iter() {
        counts[edges.partition_point(|e| e < v)] += 1;
    }
    let expected = counts.iter().map(|c| *c as f64 / n as f64).collect();
    (edges, expected)
}

/// The references of a model trained on `rows` (row indices of `ex`) whose holdout scores are
/// `scores`; name and version are filled in when it is published.
pub fn references(ex: &Examples, rows: std::ops::Range<usize>, scores: &[f64]) -> Vec<Reference> {
    let column = |name: &str| FEATURE_NAMES.iter().position(|f| *f == name).unwrap();
    let matrix = &ex.rows[rows.start * N_FEATURES..rows.end * N_FEATURES];
    let mut named: Vec<(String, Vec<f64>)> = ROW_FEATURES
        .iter()
        .map(|f| {
            let j = column(f);
            (
                f.to_string(),
                matrix.chunks(N_FEATURES).map(|r| r[j]).collect(),
            )
        })
        .collect();
    let types: Vec<usize> = TYPE_COLUMNS.iter().map(|c| column(c)).collect();
    let type_index = |r: &[f64]| types.iter().position(|j| r[*j] > 0.5).unwrap_or(0) as f64;
    named.push((
        "type".into(),
        matrix.chunks(N_FEATURES).map(type_index).collect(),
    ));
    named.push(("score".into(), scores.to_vec()));
    named
        .into_iter()
        .map(|(feature, mut values)| {
            let (edges, expected) = bins(&mut values);
            Reference {
                model_name: String::new(),
                version: 0,
                feature,
                edges,
                expected,
                created_at: 0,
            }
        })
        .collect()
}

/// Archives the references of `version`.
pub async fn archive(
    ch: &ClickHouseArgs,
    model_name: &str,
    version: i32,
    references: &[Reference],
) -> Result<(), TrainerError> {
    let now = (fraudstream_common::now_millis() / 1000) as u32;
    let mut insert = ch.client().insert::<Reference>("drift_reference").await?;
    for r in references {
        insert
            .write(&Reference {
                model_name: model_name.into(),
                version,
                created_at: now,
                ..r.clone()
            })
            .await?;
    }
    insert.end().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciles_share_the_rows_and_ties_merge_bins() {
        let mut values: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let (edges, expected) = bins(&mut values);
        assert_eq!(edges.len(), 9);
        assert!(
            expected.iter().all(|e| (e - 0.1).abs() < 1e-9),
            "{expected:?}"
        );
        // Three quarters zero (a balance): one bin holds them all.
        let mut values: Vec<f64> = (0..1000)
            .map(|i| if i < 750 { 0.0 } else { i as f64 })
            .collect();
        let (edges, expected) = bins(&mut values);
        assert_eq!(edges[0], 0.0);
        assert!((expected[0] - 0.75).abs() < 1e-9);
        assert!((expected.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // One value only: one bin.
        let (edges, expected) = bins(&mut [5.0; 10]);
        assert_eq!((edges.len(), expected), (0, vec![1.0]));
    }
}
