//! How every fraudstream binary stops: the first SIGINT or SIGTERM asks it to finish cleanly
//! (write, flush and commit what it holds, then exit 0); a second one exits at once with 130, for
//! a person who does not want to wait. One type, so the four binaries stop the same way and say so
//! the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Set once a stop was asked for. Cheap to clone; read from threads ([`Stop::flag`]) or awaited
/// from async code ([`Stop::stopped`]).
#[derive(Clone)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    rx: watch::Receiver<bool>,
    tx: Arc<watch::Sender<bool>>,
}

impl Stop {
    /// A stop nobody has asked for yet, set only by [`Stop::set`] (tests, `--stop-after`).
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Stop {
            flag: Arc::new(AtomicBool::new(false)),
            rx,
            tx: Arc::new(tx),
        }
    }

    /// A stop set by the first SIGINT/SIGTERM (logging `finishing`, what the service does before
    /// it exits); a second signal exits with 130. Call from inside the tokio runtime.
    pub fn on_signals(finishing: &'static str) -> Self {
        let stop = Stop::new();
        let handle = stop.clone();
        tokio::spawn(async move {
            crate::shutdown_signal().await;
            tracing::info!("stopping: {finishing} (a second Ctrl-C or SIGTERM exits at once)");
            handle.set();
            crate::shutdown_signal().await;
            tracing::warn!("stopped at once by a second signal; what was not committed is read again on restart");
            std::process::exit(130);
        });
        stop
    }

    pub fn set(&self) {
        self.flag.store(true, Ordering::Relaxed);
        let _ = self.tx.send(true);
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The flag itself, for code that polls it from a thread of its own.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// A receiver that turns true on stop, for code that selects on it.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// Resolves once a stop was asked for.
    pub async fn stopped(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_is_seen_by_the_flag_the_receiver_and_the_waiters() {
        let stop = Stop::new();
        let (flag, rx) = (stop.flag(), stop.receiver());
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.stopped().await }
        });
        assert!(!stop.is_set() && !*rx.borrow());
        stop.set();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter woke")
            .unwrap();
        assert!(flag.load(Ordering::Relaxed) && *rx.borrow());
    }
}
