//! The trainer: trains, evaluates, gates and publishes LightGBM models. Built in issue 6.
