//! Per-account state after an assignment: re-read from the input topic (up to `state_lookback`
//! records of the partition before the first offset to score). The scoring stage owns it.

use crate::stage::decode;
use crate::{Engine, ScorerError};
use fraudstream_common::features::AccountHistory;
use fraudstream_common::kafka::{read_partition_range, watermarks};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use std::time::{Duration, Instant};

/// The consumer that reads account state back from the input topic. The stage keeps one for
/// its lifetime: creating and destroying a client per partition cost ~110 ms each, and a
/// fresh assignment of 6 partitions stalled scoring for most of a second.
pub(crate) fn reader(engine: &Engine) -> Result<BaseConsumer, ScorerError> {
    Ok(engine.cfg.kafka.range_reader("scorer-state-rebuild")?)
}

/// How long a rebuild waits for its range through a broker outage before the scorer stops with
/// the error: scoring on with part of the state would give the partition's accounts wrong
/// features without a trace.
const REBUILD_PATIENCE: Duration = Duration::from_secs(300);

/// Re-reads up to `state_lookback` records of `partition` before `up_to` into a history.
pub(crate) fn rebuild(
    engine: &Engine,
    reader: &BaseConsumer,
    partition: i32,
    up_to: i64,
) -> Result<AccountHistory, ScorerError> {
    let mut history = AccountHistory::default();
    let topic = &engine.cfg.input_topic;
    let (low, _) = watermarks(reader, topic, partition)?;
    let from = (up_to - engine.cfg.state_lookback).max(low);
    let started = Instant::now();
    let mut n = 0u64;
    let mut outage = None;
    read_partition_range(
        reader,
        topic,
        partition,
        from,
        up_to,
        REBUILD_PATIENCE,
        |m| match m.payload().map(|p| decode(engine, p)) {
            Some(Ok(Ok(tx))) => {
                history.observe(&tx.name_orig, m.offset(), tx.step, tx.amount);
                n += 1;
            }
            Some(Err(e)) => outage = Some(e),
            _ => {} // a dead letter when it was scored: no state
        },
    )?;
    if let Some(e) = outage {
        return Err(e);
    }
    // Kept for the next partition: stop it fetching this one in the background meanwhile.
    reader.unassign()?;
    engine
        .metrics
        .state_rebuilds
        .with_label_values(&[&partition.to_string()])
        .inc_by(n);
    tracing::info!(
        partition,
        records = n,
        from,
        up_to,
        ms = started.elapsed().as_millis() as u64,
        "account state rebuilt"
    );
    Ok(history)
}
