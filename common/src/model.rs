//! The model artifact: a LightGBM model as carried by a `ModelRecord`, checked before use.
//!
//! `lightgbm3::Booster` is neither `Send` nor `Sync`, so a [`LoadedModel`] is built and used on one
//! thread (the scorer's scoring thread); only `ModelRecord`s (plain data) cross threads.

use crate::features::{FEATURE_NAMES, N_FEATURES};
use crate::forest::{Forest, SHAP_TOLERANCE};
use fraudstream_schemas::{Compression, ModelRecord, ModelStatus, Reason};
use lightgbm3::Booster;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a model record was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error(
        "model {name} v{version}: format {format:?} is not supported (expected \"lightgbm-text\")"
    )]
    Format {
        name: String,
        version: i32,
        format: String,
    },
    #[error("model {name} v{version}: its features differ from this build's ({detail})")]
    Features {
        name: String,
        version: i32,
        detail: String,
    },
    #[error("model {name} v{version}: the model text does not decompress to UTF-8 ({source})")]
    Decompress {
        name: String,
        version: i32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("model {name} v{version}: LightGBM refused it ({source})")]
    LightGbm {
        name: String,
        version: i32,
        #[source]
        source: lightgbm3::Error,
    },
    #[error("model {name} v{version}: it expects {expects} features, the record lists {lists}")]
    FeatureCount {
        name: String,
        version: i32,
        expects: usize,
        lists: usize,
    },
}

/// A model ready to score, with what the scorer reports about it.
pub struct LoadedModel {
    pub name: String,
    pub version: i32,
    pub threshold: f64,
    booster: Booster,
    /// The same trees evaluated natively, when they give LightGBM's exact scores (see
    /// [`crate::forest`]); `None` scores with LightGBM.
    forest: Option<Forest>,
}

/// Rows on which a native evaluation must match LightGBM (scores bit for bit, SHAP contributions
/// to rounding) before it serves.
const PROBE_ROWS: usize = 4096;
const PROBE_CONTRIB_ROWS: usize = 256;

/// Caps the threads every LightGBM call in this process may use (`LGBM_SetMaxThreads`).
///
/// The scorer uses 1: it scales out with partitions and instances, and an OpenMP team on a busy
/// machine costs more than it saves. Its threads spin at each parallel region's barrier while
/// waiting for a team member that the OS has descheduled (measured: ~12% of the scoring thread on
/// 2 cores shared with librdkafka and the broker). OpenMP's own environment variables cannot do
/// this from `main`: libgomp reads them when it is loaded, before `main` runs.
pub fn limit_threads(n: i32) {
    // SAFETY: sets a process-wide integer in LightGBM; no pointers involved.
    unsafe {
        lightgbm3_sys::LGBM_SetMaxThreads(n);
    }
}

/// A `ModelRecord` around a bootstrap model file (version 0, champion).
pub fn bootstrap_record(model_name: &str, text: String, threshold: f64) -> ModelRecord {
    ModelRecord {
        model_name: model_name.into(),
        version: 0,
        created_at: crate::now_millis(),
        format: "lightgbm-text".into(),
        feature_names: crate::features::feature_names(),
        threshold,
        metrics: Default::default(),
        training_window_start: 0,
        training_window_end: 0,
        compression: Compression::None,
        model_text: text.into_bytes(),
        status: ModelStatus::Champion,
    }
}

static NATIVE_TREES: AtomicBool = AtomicBool::new(true);

/// Whether models loaded from now on may score natively (see [`crate::forest`]); process-wide,
/// like [`limit_threads`]. On by default.
pub fn use_native_trees(on: bool) {
    NATIVE_TREES.store(on, Ordering::Relaxed);
}

/// Model text, compressed for the record when large (LightGBM text compresses ~5x).
pub fn pack_model_text(text: &str) -> (Compression, Vec<u8>) {
    if text.len() > 64 * 1024 {
        if let Ok(z) = zstd::encode_all(text.as_bytes(), 9) {
            return (Compression::Zstd, z);
        }
    }
    (Compression::None, text.as_bytes().to_vec())
}

impl LoadedModel {
    /// Checks and loads a record: format, feature list, then LightGBM's own parse.
    pub fn from_record(r: &ModelRecord) -> Result<Self, ModelError> {
        let (name, version) = (r.model_name.clone(), r.version);
        if r.format != "lightgbm-text" {
            return Err(ModelError::Format {
                name,
                version,
                format: r.format.clone(),
            });
        }
        let text = match r.compression {
            Compression::None => r.model_text.clone(),
            Compression::Zstd => {
                zstd::decode_all(&r.model_text[..]).map_err(|e| ModelError::Decompress {
                    name: name.clone(),
                    version,
                    source: Box::new(e),
                })?
            }
        };
        let text = String::from_utf8(text).map_err(|e| ModelError::Decompress {
            name: name.clone(),
            version,
            source: Box::new(e),
        })?;
        // A model that names its features in another order is re-ordered to ours, once, here.
        let text = crate::model_text::align_to_scorer(&text, &r.feature_names)
            .map_err(|detail| ModelError::Features {
                name: name.clone(),
                version,
                detail,
            })?
            .into_owned();
        let booster = Booster::from_string(&text).map_err(|source| ModelError::LightGbm {
            name: name.clone(),
            version,
            source,
        })?;
        if booster.num_features() as usize != N_FEATURES {
            return Err(ModelError::FeatureCount {
                name,
                version,
                expects: booster.num_features() as usize,
                lists: N_FEATURES,
            });
        }
        let mut model = LoadedModel {
            name: r.model_name.clone(),
            version: r.version,
            threshold: r.threshold,
            booster,
            forest: None,
        };
        if NATIVE_TREES.load(Ordering::Relaxed) {
            model.forest = match model.native_forest(&text) {
                Ok(forest) => Some(forest),
                Err(why) => {
                    tracing::warn!(model = %name, version, %why, "scoring with LightGBM's own predict (slower)");
                    None
                }
            };
        }
        Ok(model)
    }

    /// The model's trees for native scoring, if they score `PROBE_ROWS` rows exactly as
    /// LightGBM does.
    fn native_forest(&self, text: &str) -> Result<Forest, String> {
        let forest = Forest::from_model_text(text, N_FEATURES)?;
        let probe = forest.probe_rows(PROBE_ROWS);
        let expected = self.lightgbm_predict(&probe).map_err(|e| e.to_string())?;
        let mut got = Vec::with_capacity(PROBE_ROWS);
        forest.predict(&probe, &mut got);
        if let Some(i) = (0..PROBE_ROWS).find(|&i| got[i].to_bits() != expected[i].to_bits()) {
            return Err(format!(
                "the native score differs from LightGBM's on probe row {i}: {} vs {}",
                got[i], expected[i]
            ));
        }
        // TreeSHAP is ~100x the cost of a score: fewer rows.
        let probe = &probe[..PROBE_CONTRIB_ROWS * N_FEATURES];
        let expected = self
            .lightgbm_contributions(probe)
            .map_err(|e| e.to_string())?;
        // All probe rows in one call, as the scorer explains a batch's alerts.
        let native = forest.contributions(probe);
        for (i, (got, want)) in native
            .chunks(N_FEATURES)
            .zip(expected.chunks(N_FEATURES + 1))
            .enumerate()
        {
            // Summed in another order than LightGBM's: equal to rounding, relative to the row.
            let scale = want[..N_FEATURES]
                .iter()
                .fold(1.0f64, |m, w| m.max(w.abs()));
            // NaN is off too.
            let off = |f: usize| {
                let diff = (got[f] - want[f]).abs();
                diff.is_nan() || diff > SHAP_TOLERANCE * scale
            };
            if let Some(f) = (0..N_FEATURES).find(|&f| off(f)) {
                return Err(format!(
                    "the native SHAP contribution of {} differs from LightGBM's on probe row {i}: {} vs {}",
                    FEATURE_NAMES[f], got[f], want[f]
                ));
            }
        }
        Ok(forest)
    }

    /// Whether scoring runs natively (the model passed the check against LightGBM).
    pub fn is_native(&self) -> bool {
        self.forest.is_some()
    }

    /// Fraud probabilities for a row-major matrix of [`N_FEATURES`] columns.
    pub fn predict(&self, rows: &[f64]) -> Result<Vec<f64>, lightgbm3::Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(forest) = &self.forest {
            let mut out = Vec::with_capacity(rows.len() / N_FEATURES);
            forest.predict(rows, &mut out);
            return Ok(out);
        }
        self.lightgbm_predict(rows)
    }

    /// [`Self::predict`] by LightGBM itself.
    pub fn lightgbm_predict(&self, rows: &[f64]) -> Result<Vec<f64>, lightgbm3::Error> {
        // num_threads=0: as many as `limit_threads` allows.
        self.booster
            .predict_with_params(rows, N_FEATURES as i32, true, "num_threads=0")
    }

    /// For each row of a row-major matrix, the `k` features that pushed its score up the most
    /// (SHAP contributions). One LightGBM call for all rows: each call has a fixed set-up cost.
    pub fn top_reasons(
        &self,
        rows: &[f64],
        k: usize,
    ) -> Result<Vec<Vec<Reason>>, lightgbm3::Error> {
        let top = |row: &[f64]| {
            let mut reasons: Vec<Reason> = FEATURE_NAMES
                .iter()
                .zip(row)
                .map(|(f, c)| Reason {
                    feature: f.to_string(),
                    contribution: *c,
                })
                .collect();
            reasons.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
            reasons.truncate(k);
            reasons
        };
        if let Some(forest) = &self.forest {
            // All rows in one call: each tree's paths are read once for the batch's alerts.
            return Ok(forest
                .contributions(rows)
                .chunks(N_FEATURES)
                .map(top)
                .collect());
        }
        Ok(self
            .lightgbm_contributions(rows)?
            .chunks(N_FEATURES + 1)
            .map(top)
            .collect())
    }

    /// LightGBM's SHAP contributions: per row, one per feature, then the bias.
    pub fn lightgbm_contributions(&self, rows: &[f64]) -> Result<Vec<f64>, lightgbm3::Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.booster.predict_contrib(rows, N_FEATURES as i32, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Rows with what LightGBM treats specially: exact zeros, values within its zero threshold,
    /// NaN and ±inf (in `special` features), and values on a grid, so rows land exactly on
    /// split thresholds.
    fn rows(n: usize, seed: u64, special: &[usize]) -> Vec<f64> {
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n * N_FEATURES)
            .map(|i| {
                let (u, v) = (next(), next());
                match (special.contains(&(i % N_FEATURES)), u) {
                    (_, u) if u < 0.1 => 0.0,
                    (true, u) if u < 0.2 => f64::NAN,
                    (true, u) if u < 0.22 => {
                        [f64::INFINITY, f64::NEG_INFINITY, 1e-36, -0.0][(v * 4.0) as usize]
                    }
                    (_, u) if u < 0.6 => (v * 20.0).round() / 10.0 - 1.0,
                    _ => v * 1e4 - 3e3,
                }
            })
            .collect()
    }

    fn labels(x: &[f64]) -> Vec<f32> {
        x.chunks(N_FEATURES)
            .map(|r| {
                let fraud =
                    (r[0] > 0.3 && r[1] < 0.5) || (r[3].is_nan() && r[2] > 0.0) || r[4] == 0.0;
                f32::from(u8::from(fraud))
            })
            .collect()
    }

    fn train(params: serde_json::Value, special: &[usize]) -> String {
        let x = rows(5000, 7, special);
        let dataset =
            lightgbm3::Dataset::from_slice(&x, &labels(&x), N_FEATURES as i32, true).unwrap();
        let booster = lightgbm3::Booster::train(dataset, &params).unwrap();
        booster.save_string().unwrap()
    }

    /// A model trained on the columns in reverse order, its features named, scores our rows
    /// exactly as LightGBM scores the reversed rows: the text is re-ordered at load.
    #[test]
    fn a_model_with_its_columns_in_another_order_is_remapped_by_name() {
        let x = rows(5000, 7, &[]);
        let reversed: Vec<f64> = x
            .chunks(N_FEATURES)
            .flat_map(|r| r.iter().rev().copied())
            .collect();
        let mut dataset =
            lightgbm3::Dataset::from_slice(&reversed, &labels(&x), N_FEATURES as i32, true)
                .unwrap();
        let names: Vec<String> = FEATURE_NAMES.iter().rev().map(|s| s.to_string()).collect();
        dataset.set_feature_names(&names).unwrap();
        let params = json!({"objective": "binary", "num_iterations": 20, "verbose": -1});
        let theirs = lightgbm3::Booster::train(dataset, &params).unwrap();
        let mut record = bootstrap_record("test", theirs.save_string().unwrap(), 0.5);
        record.feature_names = names;
        let model = LoadedModel::from_record(&record).unwrap();
        assert!(model.is_native());
        let probe = rows(2000, 99, &[]);
        let probe_reversed: Vec<f64> = probe
            .chunks(N_FEATURES)
            .flat_map(|r| r.iter().rev().copied())
            .collect();
        let want = theirs
            .predict_with_params(&probe_reversed, N_FEATURES as i32, true, "num_threads=1")
            .unwrap();
        assert_eq!(model.predict(&probe).unwrap(), want);
        assert_eq!(model.lightgbm_predict(&probe).unwrap(), want);
        // Only the names of the scorer's features, in any order, are accepted.
        record.feature_names = vec![];
        let renamed = theirs
            .save_string()
            .unwrap()
            .replace("orig_emptied", "emptied");
        record.model_text = renamed.into_bytes();
        record.compression = Compression::None;
        let err = LoadedModel::from_record(&record).err().unwrap().to_string();
        assert!(
            err.contains("\"emptied\"") && err.contains("\"orig_emptied\""),
            "{err}"
        );
    }

    fn load(text: String) -> LoadedModel {
        LoadedModel::from_record(&bootstrap_record("test", text, 0.5)).unwrap()
    }

    /// What a user would check: the scores are LightGBM's to the bit, the reasons' contributions
    /// to rounding.
    fn assert_same_as_lightgbm(model: &LoadedModel, special: &[usize]) {
        let x = rows(3000, 99, special);
        let native = model.predict(&x).unwrap();
        let lightgbm = model.lightgbm_predict(&x).unwrap();
        assert_eq!(native.len(), 3000);
        for (i, (a, b)) in native.iter().zip(&lightgbm).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "row {i}: native {a} vs LightGBM {b}"
            );
        }
        let x = &x[..300 * N_FEATURES];
        let want = model.lightgbm_contributions(x).unwrap();
        // The scorer explains a batch's alerts in one call: each row must get the bits it gets
        // alone, and those must be LightGBM's to rounding.
        let forest = model.forest.as_ref().unwrap();
        let batch = forest.contributions(x);
        assert_eq!(batch.len(), x.len());
        let bits = |c: &[f64]| c.iter().map(|c| c.to_bits()).collect::<Vec<_>>();
        let rows = x.chunks(N_FEATURES).zip(batch.chunks(N_FEATURES));
        for (i, ((row, with_others), want)) in rows.zip(want.chunks(N_FEATURES + 1)).enumerate() {
            let got = forest.contributions(row);
            assert_eq!(
                bits(&got),
                bits(with_others),
                "row {i}: alone vs in a batch"
            );
            let scale = want[..N_FEATURES]
                .iter()
                .fold(1.0f64, |m, w| m.max(w.abs()));
            for f in 0..N_FEATURES {
                assert!(
                    (got[f] - want[f]).abs() <= 1e-12 * scale,
                    "row {i}, feature {f}: {} vs {}",
                    got[f],
                    want[f]
                );
            }
        }
        let reasons = model.top_reasons(x, 3).unwrap();
        assert_eq!(reasons.len(), 300);
        assert!(reasons.iter().all(|r| r.len() == 3));
    }

    #[test]
    fn native_scores_are_lightgbms_bit_for_bit_and_reasons_to_rounding() {
        let base = json!({"objective": "binary", "num_iterations": 60, "num_leaves": 15,
            "min_data_in_leaf": 5, "verbose": -1, "num_threads": 1});
        // No NaN in training: no missing-value splits (the scorer's case, one comparison a step).
        let plain = load(train(base.clone(), &[]));
        assert!(plain.is_native() && plain.forest.as_ref().unwrap().plain);
        // Shallow trees: the walk over trees laid out complete.
        assert!(plain.forest.as_ref().unwrap().complete.is_some());
        assert_same_as_lightgbm(&plain, &[3, 4]);
        // The walk over nodes that trees too deep to lay out complete take, on the same trees.
        let mut plain = plain;
        plain.forest.as_mut().unwrap().complete = None;
        assert_same_as_lightgbm(&plain, &[3, 4]);
        // NaN in training: splits that send NaN their own way.
        let nan = load(train(base.clone(), &[3, 4]));
        assert!(nan.is_native() && !nan.forest.as_ref().unwrap().plain);
        assert_same_as_lightgbm(&nan, &[3, 4]);
        // Zero as missing.
        let mut zero_params = base.clone();
        zero_params["zero_as_missing"] = json!(true);
        let zero = load(train(zero_params, &[3]));
        assert!(zero.is_native() && !zero.forest.as_ref().unwrap().plain);
        assert_same_as_lightgbm(&zero, &[3, 4]);
        // Deep leaf-wise trees: paths with more distinct features than a SHAP table is kept for.
        let mut deep_params = base.clone();
        deep_params["num_leaves"] = json!(255);
        deep_params["num_iterations"] = json!(10);
        let deep = load(train(deep_params, &[]));
        assert!(deep.is_native());
        assert_same_as_lightgbm(&deep, &[]);
    }

    #[test]
    fn models_the_native_path_does_not_cover_are_scored_by_lightgbm() {
        let params = json!({"objective": "binary", "num_iterations": 20, "num_leaves": 7,
            "verbose": -1, "num_threads": 1});
        let text = train(params, &[]);
        // LightGBM reads it; the native path only implements `binary`.
        let text = text.replace("objective=binary sigmoid:1", "objective=cross_entropy");
        let model = load(text.clone());
        assert!(!model.is_native());
        let x = rows(1000, 5, &[]);
        assert_eq!(
            model.predict(&x).unwrap(),
            model.lightgbm_predict(&x).unwrap()
        );
        let refusal = |text: &str| Forest::from_model_text(text, N_FEATURES).unwrap_err();
        assert!(refusal(&text).contains("objective cross_entropy"));
        let binary = text.replace("objective=cross_entropy", "objective=binary sigmoid:1");
        assert!(Forest::from_model_text(&binary, N_FEATURES).is_ok());
        let first_tree = |from: &str, to: &str| binary.replacen(from, to, 1);
        assert!(refusal(&first_tree("num_cat=0", "num_cat=1")).contains("Tree=0: categorical"));
        assert!(
            refusal(&first_tree("is_linear=0", "is_linear=1")).contains("Tree=0: a linear tree")
        );
        assert!(refusal(&first_tree("left_child=", "left_child=40 ")).contains("Tree=0:"));
    }
}
