//! Waiting out a schema registry that cannot answer. A registry that is down, slow or restarting
//! is not a property of the record being decoded: the record waits (and so does everything behind
//! it), it is never dead-lettered for it. Shared by the scorer (blocking threads) and the sink
//! (async), so both report an outage the same way: one log line when it starts and one when it
//! ends (never one per record), `<service>_registry_up` at 0 meanwhile, and `/health` unready
//! with the reason.

use crate::server::Health;
use fraudstream_schemas::SchemaError;
use prometheus::IntGauge;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// One service's view of the registry's availability, shared by its threads.
pub struct RegistryWait {
    up: IntGauge,
    health: Arc<Health>,
    max_backoff: Duration,
    outage: Mutex<Option<Outage>>,
}

struct Outage {
    backoff: Duration,
    /// What /health said before the outage, said again once it ends.
    health_before: (bool, String),
}

impl RegistryWait {
    /// `up` is set to 1 now, 0 during an outage; retries back off up to `max_backoff`.
    pub fn new(up: IntGauge, health: Arc<Health>, max_backoff: Duration) -> Self {
        up.set(1);
        RegistryWait {
            up,
            health,
            max_backoff,
            outage: Mutex::new(None),
        }
    }

    /// `Some(delay)` before the next try when `e` says the registry could not answer; `None` when
    /// the failure is the record's own (a wire-format error, a 404 for its id while the registry
    /// answers) and the caller should give up on the record.
    pub fn failed(&self, e: &SchemaError) -> Option<Duration> {
        if !e.is_registry_unavailable() {
            self.answered();
            return None;
        }
        let mut outage = self.outage.lock().unwrap();
        let o = outage.get_or_insert_with(|| {
            self.up.set(0);
            let before = (self.health.is_ready(), self.health.detail());
            self.health
                .set_unready(format!("schema registry unavailable: {e}"));
            tracing::warn!(error = %e, "schema registry unavailable; records wait (none is dead-lettered for it)");
            Outage {
                backoff: FIRST_BACKOFF,
                health_before: before,
            }
        });
        let delay = o.backoff;
        o.backoff = (o.backoff * 2).min(self.max_backoff);
        Some(delay)
    }

    /// The registry answered: ends an outage if there was one.
    pub fn answered(&self) {
        let Some(o) = self.outage.lock().unwrap().take() else {
            return;
        };
        self.up.set(1);
        let (ready, detail) = o.health_before;
        if ready {
            self.health.set_ready(detail);
        } else {
            self.health.set_unready(detail);
        }
        tracing::info!("schema registry answers again");
    }

    /// Runs `attempt` until it succeeds or fails for a reason of its own, sleeping through
    /// registry outages; when `stopping()` turns true during one, returns the registry's error.
    pub fn retry_blocking<T>(
        &self,
        stopping: impl Fn() -> bool,
        mut attempt: impl FnMut() -> Result<T, SchemaError>,
    ) -> Result<T, SchemaError> {
        loop {
            match attempt() {
                Ok(v) => {
                    self.answered();
                    return Ok(v);
                }
                Err(e) => match self.failed(&e) {
                    Some(delay) if !stopping() => std::thread::sleep(delay),
                    _ => return Err(e),
                },
            }
        }
    }

    /// [`RegistryWait::retry_blocking`] for async callers.
    pub async fn retry<T, F, Fut>(
        &self,
        stopping: impl Fn() -> bool,
        mut attempt: F,
    ) -> Result<T, SchemaError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SchemaError>>,
    {
        loop {
            match attempt().await {
                Ok(v) => {
                    self.answered();
                    return Ok(v);
                }
                Err(e) => match self.failed(&e) {
                    Some(delay) if !stopping() => tokio::time::sleep(delay).await,
                    _ => return Err(e),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> SchemaError {
        SchemaError::Registry {
            url: "http://registry".into(),
            message: "error sending request, retriable: true".into(),
        }
    }

    fn wait() -> (RegistryWait, IntGauge, Arc<Health>) {
        let up = IntGauge::new("up", "up").unwrap();
        let health = Health::new();
        health.set_ready("consuming");
        let wait = RegistryWait::new(up.clone(), health.clone(), Duration::from_millis(4));
        (wait, up, health)
    }

    #[test]
    fn an_outage_backs_off_and_ends_with_health_restored() {
        let (wait, up, health) = wait();
        let mut tries = 0;
        let got = wait.retry_blocking(
            || false,
            || {
                tries += 1;
                if tries < 5 {
                    assert!(tries == 1 || (up.get() == 0 && !health.is_ready()));
                    Err(unavailable())
                } else {
                    Ok(tries)
                }
            },
        );
        assert_eq!(got.unwrap(), 5);
        assert_eq!(up.get(), 1);
        assert!(health.is_ready());
        assert_eq!(health.detail(), "consuming");
    }

    #[test]
    fn a_record_of_its_own_fault_is_not_retried() {
        let (wait, up, _) = wait();
        let mut tries = 0;
        let got: Result<(), _> = wait.retry_blocking(
            || false,
            || {
                tries += 1;
                Err(SchemaError::WireFormat("empty payload".into()))
            },
        );
        assert!(matches!(got, Err(SchemaError::WireFormat(_))));
        assert_eq!((tries, up.get()), (1, 1));
    }

    #[test]
    fn stopping_during_an_outage_gives_the_registry_error() {
        let (wait, up, health) = wait();
        let got: Result<(), _> = wait.retry_blocking(|| true, || Err(unavailable()));
        assert!(got.unwrap_err().is_registry_unavailable());
        assert_eq!(up.get(), 0);
        assert!(!health.is_ready());
    }
}
