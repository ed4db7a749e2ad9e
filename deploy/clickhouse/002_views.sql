-- Joins for training and dashboards. The right side of a join is a subquery (ClickHouse 18.16
-- joins only that way) with an alias (current ClickHouse requires one).

-- Transactions with their (late) ground truth: what the trainer learns from.
CREATE VIEW IF NOT EXISTS labelled_transactions AS
SELECT
    transaction_id, event_time, event_ms, step, type, amount, name_orig, oldbalance_org,
    newbalance_orig, name_dest, oldbalance_dest, newbalance_dest, is_flagged_fraud,
    kafka_partition, kafka_offset, is_fraud, labelled_at
FROM transactions FINAL
ANY INNER JOIN (
    SELECT transaction_id, is_fraud, labelled_at FROM labels FINAL
) AS l USING transaction_id;

-- Predictions with their label once it arrived (has_label = 0 until then): live precision/recall.
CREATE VIEW IF NOT EXISTS predictions_labelled AS
SELECT
    transaction_id, name_orig, type, amount, event_time, scored_at, latency_ms, score, is_alert,
    threshold, model_name, model_version, challenger_score, challenger_version,
    is_fraud, has_label
FROM predictions FINAL
ANY LEFT JOIN (
    SELECT transaction_id, is_fraud, 1 AS has_label FROM labels FINAL
) AS l USING transaction_id;
