//! LightGBM boosting one round at a time, through LightGBM's C API.
//!
//! Why not `lightgbm3::Booster::train_with_valid`: it runs every round in one call, so a user
//! watching a multi-minute training sees nothing move. Here each round is one call, so the caller
//! gets the round number and the validation metric after each (a progress bar), with the same
//! early stopping: stop after `early_stopping_rounds` rounds without a better validation metric
//! and roll those rounds back. The result is LightGBM's model text, loaded back with `lightgbm3` for
//! prediction, exactly as the scorer loads it.

use crate::TrainerError;
use fraudstream_common::features::{FEATURE_NAMES, N_FEATURES};
use lightgbm3_sys as sys;
use std::ffi::{c_void, CStr, CString};

fn check(code: i32) -> Result<(), TrainerError> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: LightGBM returns a pointer to its thread-local, NUL-terminated last error.
    let message = unsafe { CStr::from_ptr(sys::LGBM_GetLastError()) };
    Err(TrainerError::Data(format!(
        "LightGBM: {}",
        message.to_string_lossy()
    )))
}

/// A LightGBM dataset, freed on drop.
struct Dataset(sys::DatasetHandle);

impl Drop for Dataset {
    fn drop(&mut self) {
        // SAFETY: the handle came from LGBM_DatasetCreateFromMat and is freed once.
        unsafe { sys::LGBM_DatasetFree(self.0) };
    }
}

impl Dataset {
    /// A dataset over a row-major matrix of `N_FEATURES` columns. LightGBM copies (bins) the
    /// data, so `rows` need not outlive it. `reference` aligns a validation set's bins.
    fn new(
        rows: &[f64],
        labels: &[f32],
        params: &CStr,
        reference: Option<&Dataset>,
    ) -> Result<Self, TrainerError> {
        assert_eq!(
            rows.len(),
            labels.len() * N_FEATURES,
            "rows and labels differ"
        );
        let mut handle = std::ptr::null_mut();
        // SAFETY: `rows` holds labels.len() * N_FEATURES f64 values, row-major, as declared.
        check(unsafe {
            sys::LGBM_DatasetCreateFromMat(
                rows.as_ptr() as *const c_void,
                sys::C_API_DTYPE_FLOAT64 as i32,
                labels.len() as i32,
                N_FEATURES as i32,
                1,
                params.as_ptr(),
                reference.map_or(std::ptr::null_mut(), |r| r.0),
                &mut handle,
            )
        })?;
        let dataset = Dataset(handle);
        // The names go into the model text, so the model describes its own columns.
        let names: Vec<CString> = FEATURE_NAMES
            .iter()
            .map(|n| CString::new(*n).expect("feature names have no NUL"))
            .collect();
        let pointers: Vec<*const std::os::raw::c_char> = names.iter().map(|n| n.as_ptr()).collect();
        // SAFETY: `pointers` holds N_FEATURES C strings that outlive the call (LightGBM copies).
        check(unsafe {
            sys::LGBM_DatasetSetFeatureNames(
                dataset.0,
                pointers.as_ptr() as *mut *const std::os::raw::c_char,
                N_FEATURES as i32,
            )
        })?;
        // SAFETY: `labels` holds one f32 per row, as declared.
        check(unsafe {
            sys::LGBM_DatasetSetField(
                dataset.0,
                c"label".as_ptr(),
                labels.as_ptr() as *const c_void,
                labels.len() as i32,
                sys::C_API_DTYPE_FLOAT32 as i32,
            )
        })?;
        Ok(dataset)
    }
}

/// A booster being trained, freed on drop.
struct Booster(sys::BoosterHandle);

impl Drop for Booster {
    fn drop(&mut self) {
        // SAFETY: the handle came from LGBM_BoosterCreate and is freed once.
        unsafe { sys::LGBM_BoosterFree(self.0) };
    }
}

impl Booster {
    /// The first validation metric after the last round.
    fn valid_metric(&self) -> Result<Option<f64>, TrainerError> {
        let mut count = 0;
        // SAFETY: out-parameters are valid for the call.
        check(unsafe { sys::LGBM_BoosterGetEvalCounts(self.0, &mut count) })?;
        if count == 0 {
            return Ok(None);
        }
        let mut out = vec![0.0f64; count as usize];
        let mut len = 0;
        // SAFETY: `out` has room for the `count` metrics LightGBM reported.
        check(unsafe { sys::LGBM_BoosterGetEval(self.0, 1, &mut len, out.as_mut_ptr()) })?;
        Ok(out.first().copied())
    }

    fn model_text(&self) -> Result<String, TrainerError> {
        let save = |buf: &mut Vec<u8>| -> Result<i64, TrainerError> {
            let mut needed = 0i64;
            // SAFETY: LightGBM writes at most `buf.len()` bytes and reports the full size.
            check(unsafe {
                sys::LGBM_BoosterSaveModelToString(
                    self.0,
                    0,
                    -1,
                    sys::C_API_FEATURE_IMPORTANCE_SPLIT as i32,
                    buf.len() as i64,
                    &mut needed,
                    buf.as_mut_ptr() as *mut std::os::raw::c_char,
                )
            })?;
            Ok(needed)
        };
        let mut buf = vec![0u8; 1 << 20];
        let needed = save(&mut buf)?;
        if needed as usize > buf.len() {
            buf = vec![0u8; needed as usize];
            save(&mut buf)?;
        }
        let text = CStr::from_bytes_until_nul(&buf).map_err(|e| TrainerError::ModelText {
            what: "LightGBM's model text is not a C string".into(),
            source: Box::new(e),
        })?;
        Ok(text.to_string_lossy().into_owned())
    }
}

/// What happened after one boosting round.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub round: u64,
    /// The first validation metric after this round.
    pub valid_metric: Option<f64>,
}

/// Trains on `train` with early stopping on `valid`'s first metric, higher being better (such as
/// `average_precision`; not a loss), after `early_stopping_rounds` without a better one (None:
/// all `max_rounds`). `params` are LightGBM's `key=value` parameters. Calls `on_round` after
/// every round. Returns the model text and the rounds kept.
pub fn train(
    train: (&[f64], &[f32]),
    valid: (&[f64], &[f32]),
    params: &str,
    max_rounds: u64,
    early_stopping_rounds: Option<u64>,
    mut on_round: impl FnMut(Round),
) -> Result<(String, u64), TrainerError> {
    let params = CString::new(params).map_err(TrainerError::Parameters)?;
    let train_set = Dataset::new(train.0, train.1, &params, None)?;
    let valid_set = Dataset::new(valid.0, valid.1, &params, Some(&train_set))?;
    let mut handle = std::ptr::null_mut();
    // SAFETY: the datasets outlive the booster (dropped after it, in reverse order).
    check(unsafe { sys::LGBM_BoosterCreate(train_set.0, params.as_ptr(), &mut handle) })?;
    let booster = Booster(handle);
    check(unsafe { sys::LGBM_BoosterAddValidData(booster.0, valid_set.0) })?;
    let (mut best, mut since_best, mut kept) = (f64::NEG_INFINITY, 0u64, 0u64);
    for round in 1..=max_rounds {
        let mut finished = 0;
        // SAFETY: out-parameter valid for the call.
        check(unsafe { sys::LGBM_BoosterUpdateOneIter(booster.0, &mut finished) })?;
        if finished != 0 {
            break;
        }
        kept = round;
        let valid_metric = booster.valid_metric()?;
        on_round(Round {
            round,
            valid_metric,
        });
        let Some(metric) = valid_metric else { continue };
        if metric > best {
            (best, since_best) = (metric, 0);
        } else {
            since_best += 1;
            if early_stopping_rounds.is_some_and(|patience| since_best >= patience) {
                for _ in 0..since_best {
                    check(unsafe { sys::LGBM_BoosterRollbackOneIter(booster.0) })?;
                }
                kept = round - since_best;
                break;
            }
        }
    }
    let text = booster.model_text()?;
    drop(booster);
    drop(valid_set);
    drop(train_set);
    Ok((text, kept))
}
