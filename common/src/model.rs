//! The model artifact: a LightGBM model as carried by a `ModelRecord`, checked before use.
//!
//! `lightgbm3::Booster` is neither `Send` nor `Sync`, so a [`LoadedModel`] is built and used on one
//! thread (the scorer's scoring thread); only `ModelRecord`s (plain data) cross threads.

use crate::features::{FEATURE_NAMES, N_FEATURES};
use fraudstream_schemas::{Compression, ModelRecord, Reason};
use lightgbm3::Booster;

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
    #[error("model {name} v{version}: cannot decompress the model text: {detail}")]
    Decompress {
        name: String,
        version: i32,
        detail: String,
    },
    #[error("model {name} v{version}: LightGBM refused it: {detail}")]
    LightGbm {
        name: String,
        version: i32,
        detail: String,
    },
}

/// A model ready to score, with what the scorer reports about it.
pub struct LoadedModel {
    pub name: String,
    pub version: i32,
    pub threshold: f64,
    booster: Booster,
}

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
        if r.feature_names != FEATURE_NAMES {
            return Err(ModelError::Features {
                name,
                version,
                detail: format!(
                    "model has {:?}, scorer has {:?}",
                    r.feature_names, FEATURE_NAMES
                ),
            });
        }
        let text = match r.compression {
            Compression::None => r.model_text.clone(),
            Compression::Zstd => {
                zstd::decode_all(&r.model_text[..]).map_err(|e| ModelError::Decompress {
                    name: name.clone(),
                    version,
                    detail: e.to_string(),
                })?
            }
        };
        let text = String::from_utf8(text).map_err(|e| ModelError::Decompress {
            name: name.clone(),
            version,
            detail: e.to_string(),
        })?;
        let lgbm = |detail: String| ModelError::LightGbm {
            name: name.clone(),
            version,
            detail,
        };
        let booster = Booster::from_string(&text).map_err(|e| lgbm(e.to_string()))?;
        if booster.num_features() as usize != N_FEATURES {
            return Err(lgbm(format!(
                "it expects {} features, the record lists {}",
                booster.num_features(),
                N_FEATURES
            )));
        }
        Ok(LoadedModel {
            name: r.model_name.clone(),
            version: r.version,
            threshold: r.threshold,
            booster,
        })
    }

    /// Fraud probabilities for a row-major matrix of [`N_FEATURES`] columns.
    pub fn predict(&self, rows: &[f64]) -> Result<Vec<f64>, lightgbm3::Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
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
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let contrib = self
            .booster
            .predict_contrib(rows, N_FEATURES as i32, true)?;
        // Per row: one contribution per feature, then the bias.
        Ok(contrib
            .chunks(N_FEATURES + 1)
            .map(|row| {
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
            })
            .collect())
    }
}
