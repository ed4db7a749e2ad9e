//! `trainer watch`: retrains when enough new labelled rows arrived in ClickHouse.
//!
//! Its thresholds live in a JSON config file that is re-read every cycle, so an operator changes
//! them without a restart (as the prototype's retraining flow did). Its progress (labelled rows
//! at the last training, last version published) is persisted in a state file after every
//! training, so a restarted watcher neither retrains at once nor forgets where it was.

use crate::TrainerError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The re-read config: `{"min_rows": 50000, "limit": 1000000, "poll_seconds": 10}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Retrain once at least this many labelled rows arrived since the last training.
    pub min_rows: u64,
    /// Train on the newest this-many labelled rows.
    pub limit: u64,
    /// Seconds between two looks at ClickHouse.
    #[serde(default = "default_poll")]
    pub poll_seconds: f64,
}

fn default_poll() -> f64 {
    10.0
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            min_rows: 50_000,
            limit: 1_000_000,
            poll_seconds: default_poll(),
        }
    }
}

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchState {
    /// Labelled rows in ClickHouse when the last training started.
    pub last_count: u64,
    /// Version published by the last training (champion or challenger), if any.
    pub last_version: Option<i32>,
    /// Trainings done (published or not).
    pub trainings: u64,
}

fn file_error(path: &Path, detail: impl std::fmt::Display) -> TrainerError {
    TrainerError::File {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

impl WatchConfig {
    /// Reads the config; a missing file is created with the defaults (and said so), a broken one
    /// is an error that names the file and the problem.
    pub fn load_or_create(path: &Path) -> Result<Self, TrainerError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                file_error(
                    path,
                    format!("{e} (expected e.g. {{\"min_rows\": 50000, \"limit\": 1000000, \"poll_seconds\": 10}})"),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let cfg = WatchConfig::default();
                std::fs::write(path, serde_json::to_string_pretty(&cfg).unwrap_or_default())
                    .map_err(|e| file_error(path, e))?;
                tracing::info!(path = %path.display(), ?cfg, "watch config created with defaults");
                Ok(cfg)
            }
            Err(e) => Err(file_error(path, e)),
        }
    }
}

impl WatchState {
    pub fn load(path: &Path) -> Result<Self, TrainerError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| file_error(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WatchState::default()),
            Err(e) => Err(file_error(path, e)),
        }
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a state file.
    pub fn save(&self, path: &Path) -> Result<(), TrainerError> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self).unwrap_or_default())
            .map_err(|e| file_error(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))
    }

    /// True when `count` labelled rows are enough new ones to retrain under `cfg`.
    pub fn due(&self, count: u64, cfg: &WatchConfig) -> bool {
        count.saturating_sub(self.last_count) >= cfg.min_rows.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_after_min_rows_new_rows() {
        let cfg = WatchConfig {
            min_rows: 100,
            ..WatchConfig::default()
        };
        let state = WatchState {
            last_count: 1000,
            ..WatchState::default()
        };
        assert!(!state.due(1099, &cfg));
        assert!(state.due(1100, &cfg));
    }

    #[test]
    fn config_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("watch-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("watch.json");
        let created = WatchConfig::load_or_create(&path).unwrap();
        assert_eq!(created, WatchConfig::default());
        std::fs::write(&path, "{\"min_rows\": \"many\"}").unwrap();
        let err = WatchConfig::load_or_create(&path).unwrap_err().to_string();
        assert!(
            err.contains("watch.json") && err.contains("min_rows"),
            "{err}"
        );
        let state = WatchState {
            last_count: 7,
            last_version: Some(3),
            trainings: 2,
        };
        state.save(&dir.join("state.json")).unwrap();
        assert_eq!(WatchState::load(&dir.join("state.json")).unwrap(), state);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
