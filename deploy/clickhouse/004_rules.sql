-- Analyst rules: the rules each prediction matched (parallel arrays, in rule id order) and the
-- rule set it was decided under. ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: the columns
-- are added in one statement, and a re-run that finds them there skips it (see `migrate`).
ALTER TABLE predictions
    ADD COLUMN rule_ids Array(String),
    ADD COLUMN rule_versions Array(Int32),
    ADD COLUMN rule_actions Array(String),
    ADD COLUMN rules_version Int64;

-- One row per rule hit with the transaction's label once it arrived (has_label = 0 until then):
-- hits per rule over time, and each rule's precision from late labels.
CREATE VIEW IF NOT EXISTS rule_hits AS
SELECT
    transaction_id, event_time, rule_id, rule_version, rule_action, is_alert, rules_version,
    is_fraud, has_label
FROM (
    SELECT transaction_id, event_time, is_alert, rules_version, rule_ids, rule_versions, rule_actions
    FROM predictions FINAL
)
ARRAY JOIN rule_ids AS rule_id, rule_versions AS rule_version, rule_actions AS rule_action
ANY LEFT JOIN (
    SELECT transaction_id, is_fraud, 1 AS has_label FROM labels FINAL
) AS l USING transaction_id;
