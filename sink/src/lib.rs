//! The sink: lands `predictions` and `labels` in ClickHouse idempotently. Built in issue 5.
