//! Models trained elsewhere: the feature matrix out (to train on in Python, say), a LightGBM model
//! text in (evaluated and gated exactly like one trained here).

use crate::{assess, holdout_range, train_range, Examples, ThresholdRule, Trained, TrainerError};
use fraudstream_common::features::{FEATURE_NAMES, N_FEATURES};
use fraudstream_common::model::{bootstrap_record, LoadedModel};
use fraudstream_common::model_text::declared_names;
use std::io::Write;
use std::path::Path;

/// Writes `ex` as CSV: a header of the feature names then `is_fraud`, one row per example in time
/// order. Values are written in Rust's shortest round-trip form, so a reader gets the same f64s.
pub fn write_features(ex: &Examples, path: &Path) -> Result<(), TrainerError> {
    let io = |e: std::io::Error| TrainerError::File {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    writeln!(out, "{},is_fraud", FEATURE_NAMES.join(",")).map_err(io)?;
    let mut line = String::new();
    for (row, label) in ex.rows.chunks(N_FEATURES).zip(&ex.labels) {
        line.clear();
        for v in row {
            line.push_str(&v.to_string());
            line.push(',');
        }
        line.push_str(if *label > 0.5 { "1\n" } else { "0\n" });
        out.write_all(line.as_bytes()).map_err(io)?;
    }
    out.flush().map_err(io)
}

/// A model text from elsewhere, evaluated like a trained one: scored through the scorer's own
/// model loading (which re-orders named features to the scorer's columns) on the holdout of
/// `ex`, its threshold chosen by `rule`, next to the one-feature baseline.
pub fn evaluate_text(
    text: String,
    ex: &Examples,
    rule: ThresholdRule,
) -> Result<Trained, TrainerError> {
    let mut record = bootstrap_record("import", text.clone(), 0.5);
    record.feature_names =
        declared_names(&text).unwrap_or_else(fraudstream_common::features::feature_names);
    let model = LoadedModel::from_record(&record).map_err(|e| TrainerError::ModelText {
        what: "the model cannot be served".into(),
        source: Box::new(e),
    })?;
    let holdout = holdout_range(ex.len());
    let (rows, labels) = ex.slice(holdout.start, holdout.end);
    if !labels.iter().any(|l| *l > 0.5) {
        return Err(TrainerError::Data(format!(
            "the holdout ({} rows) has no fraud to evaluate on",
            labels.len()
        )));
    }
    let scores = model.predict(rows)?;
    let rounds = text.matches("\nTree=").count() as f64;
    let mut trained = assess(ex, text, scores, rule, train_range(ex.len()), holdout);
    trained.metrics.insert("rounds".into(), rounds);
    Ok(trained)
}
