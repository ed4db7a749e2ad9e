//! A plain baseline reported next to every model: the best one-feature rule ("the larger the
//! amount, the likelier fraud", "an emptied account is fraud"). The feature and its direction are
//! chosen on the training part and judged on the holdout like the model, so a model that does not
//! clearly beat it has learnt nothing a fraud analyst's first rule would not catch.

use crate::{pr_and_roc_auc, Examples};
use fraudstream_common::features::{FEATURE_NAMES, N_FEATURES};
use std::ops::Range;

/// The chosen rule and its holdout PR-AUC.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub feature: &'static str,
    /// True: a larger value means fraud; false: a smaller one.
    pub larger_is_fraud: bool,
    pub pr_auc: f64,
}

/// Rows used to choose the rule: enough to rank 21 features, cheap on millions of rows.
const CHOOSE_ON: usize = 500_000;

/// Column `j` of `rows` (every `stride`-th row), signed so that larger means fraud.
fn column(ex: &Examples, rows: Range<usize>, stride: usize, j: usize, sign: f64) -> Vec<f64> {
    rows.step_by(stride)
        .map(|i| sign * ex.rows[i * N_FEATURES + j])
        .collect()
}

fn labels(ex: &Examples, rows: Range<usize>, stride: usize) -> Vec<bool> {
    rows.step_by(stride).map(|i| ex.labels[i] > 0.5).collect()
}

/// The one-feature rule with the best PR-AUC on `train` (subsampled), evaluated on `holdout`.
pub fn one_feature_rule(ex: &Examples, train: Range<usize>, holdout: Range<usize>) -> Baseline {
    let stride = (train.len() / CHOOSE_ON).max(1);
    let train_labels = labels(ex, train.clone(), stride);
    let mut best = (f64::MIN, 0, 1.0);
    for j in 0..N_FEATURES {
        for sign in [1.0, -1.0] {
            let (ap, _) =
                pr_and_roc_auc(&column(ex, train.clone(), stride, j, sign), &train_labels);
            if ap > best.0 {
                best = (ap, j, sign);
            }
        }
    }
    let (_, j, sign) = best;
    let (pr_auc, _) = pr_and_roc_auc(
        &column(ex, holdout.clone(), 1, j, sign),
        &labels(ex, holdout, 1),
    );
    Baseline {
        feature: FEATURE_NAMES[j],
        larger_is_fraud: sign > 0.0,
        pr_auc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_is_the_feature_that_ranks_fraud_first() {
        // Fraud exactly when `amount` (column 7) is large; every other column is noise.
        let mut ex = Examples::default();
        for i in 0..2_000 {
            let fraud = i % 50 == 0;
            for j in 0..N_FEATURES {
                let noise = ((i * 7919 + j * 104_729) % 1000) as f64;
                ex.rows.push(if j == 7 {
                    noise + if fraud { 5_000.0 } else { 0.0 }
                } else {
                    noise
                });
            }
            ex.labels.push(fraud as u8 as f32);
        }
        let b = one_feature_rule(&ex, 0..1_600, 1_600..2_000);
        assert_eq!((b.feature, b.larger_is_fraud), ("amount", true));
        assert!((b.pr_auc - 1.0).abs() < 1e-9, "{b:?}");
    }
}
