-- Analyst verdicts from the review page land in `labels` like the replayed ground truth, marked
-- by source. One label per transaction is kept (ReplacingMergeTree): the last to arrive. A
-- transaction's chargeback (FILE) normally arrives days after an analyst's verdict and replaces
-- it, which is what training should learn from: the bank's final word over an analyst's call.
ALTER TABLE labels
    ADD COLUMN source String DEFAULT 'FILE',
    ADD COLUMN analyst String,
    ADD COLUMN note String;
