//! The scoring stage: decode → account state → features → LightGBM → encoded outputs, on a thread
//! of its own, so the Kafka thread polls the next batch, produces the previous one and commits
//! while a batch is being scored (the two used to take turns on one thread, with a core idle).
//!
//! The stage owns what may not leave its thread (LightGBM boosters are neither `Send` nor `Sync`)
//! and the per-account state. It knows nothing of Kafka transactions: the Kafka thread decides
//! what is sent and committed, and drops the results of batches polled before a rebalance or an
//! aborted commit (their `generation` is out of date); the stage then rebuilds its state.

use crate::models::{ModelEvent, ModelSet};
use crate::rules::Rules;
use crate::state;
use crate::{Engine, ScorerError};
use fraudstream_common::accounts::{hash_name, PREFETCH_AHEAD};
use fraudstream_common::features::{push_features, AccountHistory, TxView, N_FEATURES};
use fraudstream_common::rules::{decide, Input};
use fraudstream_common::trace;
use fraudstream_schemas::{Codec, Prediction, RuleHit, SchemaError, Transaction};
use rdkafka::consumer::BaseConsumer;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

/// Records polled in one go, copied out of librdkafka's buffers (a few hundred bytes each) so the
/// Kafka thread can poll on while they are scored.
#[derive(Default)]
pub(crate) struct Batch {
    /// The consumer's generation when these were polled (bumped on every assignment and abort).
    pub generation: u64,
    /// Keys and payloads, back to back.
    pub bytes: Vec<u8>,
    pub records: Vec<RawRecord>,
    /// (record index, traceparent) of the sampled records that carry a trace, in order.
    pub traced: Vec<(usize, String)>,
}

pub(crate) struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    key: Option<Range<usize>>,
    payload: Option<Range<usize>>,
}

impl Batch {
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) {
        let mut copy = |b: &[u8]| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(b);
            start..self.bytes.len()
        };
        let key = key.map(&mut copy);
        let payload = payload.map(&mut copy);
        self.records.push(RawRecord {
            partition,
            offset,
            key,
            payload,
        });
    }

    pub fn key(&self, r: &RawRecord) -> Option<&[u8]> {
        r.key.clone().map(|k| &self.bytes[k])
    }

    pub fn payload(&self, r: &RawRecord) -> Option<&[u8]> {
        r.payload.clone().map(|p| &self.bytes[p])
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
        self.traced.clear();
    }

    /// The offset to commit per partition once this batch's outputs are sent.
    pub fn next_offsets(&self) -> HashMap<i32, i64> {
        let mut next = HashMap::new();
        for r in &self.records {
            let o = next.entry(r.partition).or_insert(0);
            *o = (*o).max(r.offset + 1);
        }
        next
    }
}

/// A batch's outputs, in input order.
pub(crate) struct Scored {
    pub generation: u64,
    pub bytes: Vec<u8>,
    pub outputs: Vec<Output>,
    /// (output index, traceparent of its scoring span) for the sampled records, in order.
    pub traced: Vec<(usize, String)>,
}

pub(crate) enum Output {
    /// A prediction (and its alert copy, encoded with the alerts topic's schema id).
    Prediction {
        key: Range<usize>,
        payload: Range<usize>,
        alert: Option<Range<usize>>,
        event_time: i64,
    },
    /// Input record `index` of the batch could not be decoded.
    DeadLetter { index: usize, reason: String },
}

/// Runs the stage: loads the models, says it is ready (with the champion's name), then scores
/// batches until the Kafka thread hangs up.
pub(crate) fn run(
    engine: Arc<Engine>,
    updates: crate::Updates,
    bootstrap: Option<String>,
    ready: Sender<Result<String, ScorerError>>,
    batches: Receiver<Arc<Batch>>,
    scored: Sender<Result<Scored, ScorerError>>,
    recycled: Receiver<Scored>,
) {
    let models = match crate::models::initial_models(&engine, &updates.models, bootstrap) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let Some(champion) = models.champion.as_ref() else {
        return; // stopped before a champion was known
    };
    let rules = Rules::load(updates.rules, &engine.metrics, &engine.stop);
    let _ = ready.send(Ok(format!("{} v{}", champion.name, champion.version)));
    let mut stage = Stage {
        engine,
        models,
        events: updates.models,
        rules,
        histories: Vec::new(),
        lookups: Vec::new(),
        reader: None,
        generation: u64::MAX,
        rows: Vec::new(),
        txs: Vec::new(),
        verdicts: Vec::new(),
        traced: Vec::new(),
        recycled,
    };
    while let Ok(batch) = batches.recv() {
        let result = stage.score(&batch);
        drop(batch); // before the result: the Kafka thread then reuses its buffer
        let failed = result.is_err();
        if scored.send(result).is_err() || failed {
            return;
        }
    }
}

struct Stage {
    engine: Arc<Engine>,
    models: ModelSet,
    events: Receiver<ModelEvent>,
    rules: Rules,
    /// (partition, its state) per input partition; rebuilt from Kafka when a partition is first
    /// seen in a generation.
    histories: Vec<(i32, AccountHistory)>,
    /// Per transaction of the batch: (index in `histories`, offset, hash of the origin's name).
    lookups: Vec<(usize, i64, u64)>,
    /// Reads state back from the input topic (created on first need, then kept).
    reader: Option<BaseConsumer>,
    generation: u64,
    /// Reused from batch to batch, as are the output buffers (`recycled`).
    rows: Vec<f64>,
    txs: Vec<Transaction>,
    /// Per transaction: whether it alerts, and the rules it matched. Reused like `txs`: a new
    /// 160 KB vector per batch was fresh memory to fault in every time.
    verdicts: Vec<(bool, Vec<RuleHit>)>,
    /// (index in `txs`, traceparent) of this batch's sampled transactions.
    traced: Vec<(usize, String)>,
    recycled: Receiver<Scored>,
}

impl Stage {
    /// New models and rules are swapped in between batches: scoring never waits for a load,
    /// and a batch is decided under one model and one rule set.
    fn apply_updates(&mut self) {
        let (name, metrics) = (&self.engine.cfg.model_name, &self.engine.metrics);
        while let Ok(event) = self.events.try_recv() {
            self.models.on_event(event, name, metrics);
        }
        self.rules.apply_events(metrics);
    }

    fn score(&mut self, batch: &Batch) -> Result<Scored, ScorerError> {
        // One span per batch (exported over OTLP when configured): decode → features → LightGBM
        // → encode. Per record would cost more than the work it describes.
        let _span = tracing::info_span!("score_batch", records = batch.records.len()).entered();
        self.apply_updates();
        if batch.generation != self.generation {
            // A rebalance or an abort: these records come from the committed offsets, and the
            // state must be what it was there.
            self.histories.clear();
            self.generation = batch.generation;
        }
        let started = Instant::now();
        let mut out = self.output_buffers(batch);
        let mut txs = std::mem::take(&mut self.txs);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        txs.clear();
        verdicts.clear();
        self.rows.clear();
        self.features(batch, &mut txs, &mut out)?;
        let result = self.predict_and_encode(&mut txs, &mut verdicts, &mut out);
        self.txs = txs;
        self.verdicts = verdicts;
        result?;
        let metrics = &self.engine.metrics;
        metrics.batch_size.observe(batch.records.len() as f64);
        metrics
            .scoring_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Output buffers sent back by the Kafka thread, or new ones.
    fn output_buffers(&self, batch: &Batch) -> Scored {
        let mut out = match self.recycled.try_recv() {
            Ok(mut out) => {
                out.bytes.clear();
                out.outputs.clear();
                out.traced.clear();
                out
            }
            Err(_) => Scored {
                generation: 0,
                bytes: Vec::with_capacity(batch.bytes.len() * 2),
                outputs: Vec::with_capacity(batch.records.len()),
                traced: Vec::new(),
            },
        };
        out.generation = batch.generation;
        out
    }

    /// Decodes each record, updates its account's state and appends its features to `rows`; a
    /// record that does not decode becomes a dead letter in `out`.
    fn features(
        &mut self,
        batch: &Batch,
        txs: &mut Vec<Transaction>,
        out: &mut Scored,
    ) -> Result<(), ScorerError> {
        self.decode_all(batch, txs, out)?;
        // The state's lookups miss the cache (it holds tens of megabytes of accounts): each
        // transaction's slot is requested a few transactions before it is read, so the misses
        // overlap instead of following one another.
        for (i, tx) in txs.iter().enumerate() {
            if let Some(&(h, _, hash)) = self.lookups.get(i + PREFETCH_AHEAD) {
                self.histories[h].1.prefetch(hash);
            }
            let (h, offset, hash) = self.lookups[i];
            let account =
                self.histories[h]
                    .1
                    .observe_hashed(hash, &tx.name_orig, offset, tx.step, tx.amount);
            push_features(&TxView::from(tx), account, &mut self.rows);
        }
        Ok(())
    }

    /// Decodes the batch into `txs`, noting where each one's state is (`lookups`); a record
    /// that does not decode becomes a dead letter in `out`.
    fn decode_all(
        &mut self,
        batch: &Batch,
        txs: &mut Vec<Transaction>,
        out: &mut Scored,
    ) -> Result<(), ScorerError> {
        self.traced.clear();
        self.lookups.clear();
        let mut traced = batch.traced.iter().peekable();
        for (index, r) in batch.records.iter().enumerate() {
            let trace = traced.next_if(|(i, _)| *i == index);
            let decoded = match batch.payload(r) {
                None => Err("empty payload (tombstone) on the transactions topic".to_string()),
                Some(pl) => decode(&self.engine, pl)?.map_err(|e| e.to_string()),
            };
            let tx = match decoded {
                Ok(tx) => tx,
                Err(reason) => {
                    out.outputs.push(Output::DeadLetter { index, reason });
                    continue;
                }
            };
            let history = self.history_of(r.partition, r.offset)?;
            self.lookups
                .push((history, r.offset, hash_name(&tx.name_orig)));
            if let Some((_, tp)) = trace {
                self.traced.push((txs.len(), tp.clone()));
            }
            txs.push(tx);
        }
        Ok(())
    }

    /// The index in `histories` of `partition`'s state, rebuilt from Kafka up to `offset` when
    /// the partition is new in this generation.
    fn history_of(&mut self, partition: i32, offset: i64) -> Result<usize, ScorerError> {
        // Records come in runs from one partition: most are the previous record's.
        if let Some(&(h, _, _)) = self.lookups.last() {
            if self.histories[h].0 == partition {
                return Ok(h);
            }
        }
        if let Some(h) = self.histories.iter().position(|(p, _)| *p == partition) {
            return Ok(h);
        }
        let engine = &*self.engine;
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => self.reader.insert(state::reader(engine)?),
        };
        let history = state::rebuild(engine, reader, partition, offset)?;
        self.histories.push((partition, history));
        Ok(self.histories.len() - 1)
    }

    /// Scores `rows` with the champion (and the challenger in shadow), explains the alerts, and
    /// encodes a prediction (and an alert) per transaction into `out`.
    fn predict_and_encode(
        &self,
        txs: &mut Vec<Transaction>,
        verdicts: &mut Vec<(bool, Vec<RuleHit>)>,
        out: &mut Scored,
    ) -> Result<(), ScorerError> {
        let champion = self
            .models
            .champion
            .as_ref()
            .expect("a champion is loaded before scoring starts");
        let scores = champion.predict(&self.rows).map_err(scoring)?;
        let shadow = match &self.models.challenger {
            Some(c) => Some((c.version, c.predict(&self.rows).map_err(scoring)?)),
            None => None,
        };
        self.verdicts(txs, &scores, champion.threshold, verdicts);
        // Reasons only for alerting rows, in one call.
        let mut alert_rows = Vec::new();
        for (i, (alert, _)) in verdicts.iter().enumerate() {
            if *alert {
                alert_rows.extend_from_slice(&self.rows[i * N_FEATURES..(i + 1) * N_FEATURES]);
            }
        }
        let mut reasons = champion
            .top_reasons(&alert_rows, 3)
            .map_err(scoring)?
            .into_iter();
        let scored_at = fraudstream_common::now_millis();
        let mut traced = self.traced.iter().peekable();
        let rules_version = self.rules.set.version();
        for (i, (tx, (is_alert, rule_hits))) in txs.drain(..).zip(verdicts.drain(..)).enumerate() {
            let span = traced
                .next_if(|(t, _)| *t == i)
                .map(|(_, tp)| trace_span(tp, &tx, scores[i], champion.version));
            let score = scores[i];
            let prediction = Prediction {
                transaction_id: tx.transaction_id,
                name_orig: tx.name_orig,
                tx_type: tx.tx_type,
                amount: tx.amount,
                event_time: tx.event_time,
                scored_at,
                score,
                is_alert,
                threshold: champion.threshold,
                model_name: champion.name.clone(),
                model_version: champion.version,
                challenger_score: shadow.as_ref().map(|(_, s)| s[i]),
                challenger_version: shadow.as_ref().map(|(v, _)| *v),
                top_reasons: if is_alert {
                    reasons.next().unwrap_or_default()
                } else {
                    Vec::new()
                },
                rule_hits,
                rules_version,
            };
            self.encode(&prediction, out)?;
            if let Some(tp) = span.as_ref().and_then(trace::traceparent) {
                out.traced.push((out.outputs.len() - 1, tp));
            }
        }
        Ok(())
    }

    /// Each transaction's verdict, appended to `into`: whether it alerts, and the rules it matched.
    /// Without rules the model decides alone (and no rule is evaluated).
    fn verdicts(
        &self,
        txs: &[Transaction],
        scores: &[f64],
        threshold: f64,
        into: &mut Vec<(bool, Vec<RuleHit>)>,
    ) {
        let set = &self.rules.set;
        let verdicts = txs.iter().zip(scores).enumerate().map(|(i, (tx, &score))| {
            let model_alert = score >= threshold;
            if set.active() == 0 {
                return (model_alert, Vec::new());
            }
            let mut hits = Vec::new();
            let input = Input {
                features: &self.rows[i * N_FEATURES..(i + 1) * N_FEATURES],
                score,
                tx_type: tx.tx_type,
                name_orig: &tx.name_orig,
                name_dest: &tx.name_dest,
                is_flagged_fraud: tx.is_flagged_fraud,
            };
            set.evaluate(&input, &mut hits);
            (decide(model_alert, &hits), hits)
        });
        into.extend(verdicts);
    }

    /// A prediction (and, for an alert, its copy under the alerts topic's schema id) into `out`.
    fn encode(&self, prediction: &Prediction, out: &mut Scored) -> Result<(), ScorerError> {
        let engine = &*self.engine;
        let key = append(&mut out.bytes, |b| {
            b.extend_from_slice(prediction.name_orig.as_bytes());
            Ok(())
        })?;
        let payload = append(&mut out.bytes, |b| {
            Codec::encode_into(engine.prediction_schema, prediction, b)
        })?;
        let alert = if prediction.is_alert {
            Some(append(&mut out.bytes, |b| {
                Codec::encode_into(engine.alert_schema, prediction, b)
            })?)
        } else {
            None
        };
        out.outputs.push(Output::Prediction {
            key,
            payload,
            alert,
            event_time: prediction.event_time,
        });
        Ok(())
    }
}

/// Decodes a transaction. While the registry cannot answer, waits (this batch and those
/// behind it) rather than calling the record bad: `Err(StoppedInOutage)` only when the
/// scorer stops during an outage. `Ok(Err(_))` is the record's own fault: a dead letter.
pub(crate) fn decode(
    engine: &Engine,
    payload: &[u8],
) -> Result<Result<Transaction, SchemaError>, ScorerError> {
    if let Some(r) = engine.codec.decode_cached(payload) {
        return Ok(r);
    }
    match engine.registry.retry_blocking(
        || engine.stop.load(Ordering::Relaxed),
        || engine.runtime.block_on(engine.codec.decode(payload)),
    ) {
        Err(e) if e.is_registry_unavailable() => Err(ScorerError::StoppedInOutage(e)),
        r => Ok(r),
    }
}

/// The scoring span of a sampled transaction, a child of the producer's span in the same trace.
fn trace_span(traceparent: &str, tx: &Transaction, score: f64, version: i32) -> tracing::Span {
    let span = tracing::info_span!(
        "score_transaction",
        transaction_id = %tx.transaction_id,
        score,
        model_version = version
    );
    trace::follow(&span, traceparent);
    span
}

fn scoring(e: lightgbm3::Error) -> ScorerError {
    ScorerError::Predict(e)
}

/// Appends what `write` writes to `bytes`, returning where it went.
fn append(
    bytes: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), fraudstream_schemas::SchemaError>,
) -> Result<Range<usize>, ScorerError> {
    let start = bytes.len();
    write(bytes)?;
    Ok(start..bytes.len())
}
