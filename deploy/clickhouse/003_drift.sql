-- Drift: how far live traffic has moved from what the serving model was trained on.

-- Written by the trainer for each version it publishes: per feature, the bins of its training rows
-- (a value falls in the first bin whose upper edge is >= it, else the last) and the fraction of
-- training rows in each bin; `score` is the model's own score on its holdout.
CREATE TABLE IF NOT EXISTS drift_reference (
    model_name String,
    version Int32,
    feature String,
    edges Array(Float64),
    expected Array(Float64),
    created_at DateTime
) ENGINE = ReplacingMergeTree()
ORDER BY (model_name, version, feature);

-- Population stability index (PSI) of each feature and of the score: the last hour of traffic (up
-- to the newest transaction, so a replay of old data works) against the serving model's training
-- rows, binned alike. Rule of thumb: < 0.1 stable, 0.1-0.25 moving, > 0.25 shifted (retrain).
-- Only the features ClickHouse can compute from a row are here; the per-account window features
-- need the account's history, which only the scorer and trainer keep.
CREATE VIEW IF NOT EXISTS feature_drift AS
SELECT
    feature, model AS model_name, model_version AS version, live_rows,
    arrayMap((c, n) -> (c - n) / n, counts, arrayResize([live_rows], length(counts), live_rows)) AS actual,
    arraySum(arrayMap((a, e) -> (greatest(a, 0.0001) - greatest(e, 0.0001))
        * log(greatest(a, 0.0001) / greatest(e, 0.0001)), actual, reference)) AS psi
FROM (
    -- Written for ClickHouse 18.16 too: no alias shadows a column, and no lambda captures a
    -- column (18.16 loses them in views and joins). Every row also counts 1 in every bin (taken
    -- off above), so the counts line up with the reference's bins, empty ones included: current
    -- ClickHouse's sumMap drops keys that sum to 0.
    SELECT
        feature, any(model_name) AS model, any(version) AS model_version,
        any(expected) AS reference, count() AS live_rows,
        tupleElement(sumMap(arrayConcat([bin], arrayEnumerate(expected)),
            arrayResize([toUInt64(1)], length(expected) + 1, toUInt64(1))), 2) AS counts
    FROM (
        SELECT feature, model_name, version, expected,
            -- The value rides along as an array (ClickHouse 18.16's lambdas cannot capture a column
            -- of a join), and +inf closes the last bin; one expression, no alias chain (18.16
            -- prunes an unused inner alias that another one needs).
            arrayFirstIndex((e, v) -> v <= e, arrayPushBack(edges, toFloat64('inf')),
                arrayResize([value], length(edges) + 1, value)) AS bin
        FROM (
            SELECT feature, value, model_name, version, edges, expected
            FROM (
                SELECT tupleElement(fv, 1) AS feature, tupleElement(fv, 2) AS value
                FROM (
                    SELECT arrayJoin([
                        ('amount', amount), ('oldbalance_org', oldbalance_org),
                        ('newbalance_orig', newbalance_orig), ('oldbalance_dest', oldbalance_dest),
                        ('newbalance_dest', newbalance_dest), ('hour_of_day', toFloat64(step % 24)),
                        ('type', toFloat64(indexOf(['PAYMENT', 'TRANSFER', 'CASH_OUT', 'DEBIT', 'CASH_IN'], type) - 1))
                    ]) AS fv
                    FROM transactions
                    WHERE event_time > (SELECT max(event_time) FROM transactions) - 3600
                )
                UNION ALL
                SELECT 'score' AS feature, score AS value
                FROM predictions
                WHERE event_time > (SELECT max(event_time) FROM predictions) - 3600
                  AND model_version = (SELECT argMax(model_version, scored_at) FROM predictions)
            ) AS live
            ANY INNER JOIN (
                SELECT feature, model_name, version, edges, expected
                FROM drift_reference FINAL
                WHERE model_name = (SELECT argMax(model_name, scored_at) FROM predictions)
                  AND version = (SELECT argMax(model_version, scored_at) FROM predictions)
            ) AS r USING feature
        )
    )
    GROUP BY feature
);
