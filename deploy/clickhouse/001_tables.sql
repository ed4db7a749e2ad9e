-- fraudstream's ClickHouse tables. Runs on ClickHouse 18.16 (Debian) and on current ClickHouse:
-- DateTime plus a UInt16 millisecond column instead of DateTime64; no TTL, no LowCardinality.
-- ReplacingMergeTree ordered by transaction id: a batch inserted twice (a sink that crashed
-- between insert and offset commit) keeps one row per id once merged, and `FINAL` reads show one
-- row per id right away. Dedup happens within a partition, so tables are partitioned by a column
-- a replay reproduces exactly (the transaction's event time), never by insert time.

CREATE TABLE IF NOT EXISTS transactions (
    transaction_id String,
    event_time DateTime,
    event_ms UInt16,
    step Int32,
    type String,
    amount Float64,
    name_orig String,
    oldbalance_org Float64,
    newbalance_orig Float64,
    name_dest String,
    oldbalance_dest Float64,
    newbalance_dest Float64,
    is_flagged_fraud UInt8,
    kafka_partition Int32,
    kafka_offset Int64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(event_time)
ORDER BY transaction_id;

CREATE TABLE IF NOT EXISTS predictions (
    transaction_id String,
    name_orig String,
    type String,
    amount Float64,
    event_time DateTime,
    event_ms UInt16,
    scored_at DateTime,
    scored_ms UInt16,
    latency_ms UInt32,
    score Float64,
    is_alert UInt8,
    threshold Float64,
    model_name String,
    model_version Int32,
    challenger_score Nullable(Float64),
    challenger_version Nullable(Int32),
    reason_features Array(String),
    reason_contributions Array(Float64)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(event_time)
ORDER BY transaction_id;

-- A label carries no event time and its labelled_at changes if a file is published again, so
-- labels are not partitioned by day: FINAL must see every copy of an id in one partition.
CREATE TABLE IF NOT EXISTS labels (
    transaction_id String,
    is_fraud UInt8,
    labelled_at DateTime,
    labelled_ms UInt16
) ENGINE = ReplacingMergeTree()
ORDER BY transaction_id;

-- The model archive, an event log: one row each time the trainer published, promoted or rolled
-- back a version (a version's status now is its newest row). It keeps the model text, so any
-- version can be served again after the compacted models topic has dropped it.
CREATE TABLE IF NOT EXISTS models (
    model_name String,
    version Int32,
    status String,
    event String,
    created_at DateTime,
    archived_at DateTime,
    archived_millis Int64,
    threshold Float64,
    pr_auc Float64,
    roc_auc Float64,
    train_rows UInt64,
    training_window_start Int64,
    training_window_end Int64,
    metrics_json String,
    feature_names Array(String),
    model_text String
) ENGINE = MergeTree()
ORDER BY (model_name, version, archived_millis);
