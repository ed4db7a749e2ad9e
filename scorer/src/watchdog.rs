//! A watchdog over librdkafka's blocking transaction calls.
//!
//! `send_offsets_to_transaction` can block forever, past its own timeout, when the consumer
//! group's coordinator leaves the cluster (confluentinc/librdkafka#5456 and #5511, both open). It
//! happened in the `cluster-leader-kill` fault scenario: a broker killed and not brought back, and
//! both scorers stuck in that call for minutes. Nothing can interrupt the call, so when one
//! overruns its timeout by [`GRACE`] the scorer starts again in place (`exec`: same binary,
//! arguments and PID), with an error in the log. Nothing is lost or doubled: the new producer's
//! `init_transactions` fences the stuck one, the coordinator aborts its transaction, and the
//! records are read again from the committed offsets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;

/// How long past its own timeout a call may block before the scorer starts again.
const GRACE: Duration = Duration::from_secs(30);

/// When the watched call must have returned (ms since the epoch); 0 while none is watched.
static DEADLINE_MS: AtomicU64 = AtomicU64::new(0);
static STARTED: Once = Once::new();

/// Runs `call` (a librdkafka call given `timeout`) under the watchdog.
pub(crate) fn watched<T>(timeout: Duration, call: impl FnOnce() -> T) -> T {
    let _watch = watch(timeout);
    call()
}

/// Watches a call given `timeout` until the returned guard drops.
fn watch(timeout: Duration) -> Watch {
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("txn-watchdog".into())
            .spawn(check_every_second);
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no transaction watchdog: could not start its thread");
        }
    });
    let deadline = now_ms() + (timeout + GRACE).as_millis() as u64;
    DEADLINE_MS.store(deadline, Ordering::Relaxed);
    Watch
}

/// Ends the watch when dropped (the call returned).
struct Watch;

impl Drop for Watch {
    fn drop(&mut self) {
        DEADLINE_MS.store(0, Ordering::Relaxed);
    }
}

fn overdue(deadline_ms: u64, now_ms: u64) -> bool {
    deadline_ms != 0 && now_ms > deadline_ms
}

fn check_every_second() {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if overdue(DEADLINE_MS.load(Ordering::Relaxed), now_ms()) {
            tracing::error!(
                grace_s = GRACE.as_secs(),
                "a Kafka transaction call has not returned within its timeout (librdkafka#5511: the \
                 group coordinator left the cluster); starting the scorer again, from the committed offsets"
            );
            let err = fraudstream_common::reexec::exec_self(&[]);
            tracing::error!(error = %err, "could not start again; exiting so a supervisor restarts the scorer");
            std::process::exit(1);
        }
    }
}

fn now_ms() -> u64 {
    fraudstream_common::now_millis().max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_watched_call_past_its_deadline_is_overdue() {
        assert!(!overdue(0, u64::MAX), "nothing watched");
        assert!(!overdue(1_000, 1_000));
        assert!(overdue(1_000, 1_001));
    }
}
