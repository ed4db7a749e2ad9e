//! CPU cost per record of each scoring stage, without Kafka (for `make bench`).
//!
//! `stages CSV MODEL [ROWS]`: encodes ROWS transactions of a PaySim CSV as the producer does, then
//! times decode → features → predict → reasons → encode over them in batches, as the scorer does.
//! With `RULES_FILE` (lines of `action<TAB>CEL expression`), also the analyst rules' evaluation
//! on every record (reported apart from the total).
use fraudstream_common::accounts::{hash_name, PREFETCH_AHEAD};
use fraudstream_common::features::{push_features, AccountHistory, TxView, N_FEATURES};
use fraudstream_common::model::LoadedModel;
use fraudstream_common::rules::{Input, RuleSet};
use fraudstream_schemas::{Codec, Prediction, Rule, Transaction};
use std::time::Instant;

// As in the scorer: allocation costs are part of what this measures.
#[global_allocator]
static GLOBAL: fraudstream_common::alloc::MiMalloc = fraudstream_common::alloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let csv = std::path::Path::new(&args[1]);
    let model_text = std::fs::read_to_string(&args[2])?;
    let limit: usize = args.get(3).map_or(Ok(usize::MAX), |s| s.parse())?;
    let threads = std::env::var("LIGHTGBM_THREADS").map_or(Ok(1), |s| s.parse())?;
    fraudstream_common::model::limit_threads(threads);
    let registry = std::env::var("SCHEMA_REGISTRY_URL")?;
    let codec = Codec::new(&registry);
    let id = codec.schema_id::<Transaction>("stages-tx").await?;
    let pid = codec.schema_id::<Prediction>("stages-out").await?;
    let mut reader = paysim::CsvReader::open(csv)?;
    let mut payloads = Vec::new();
    while let Some((line, row)) = reader.next_row()? {
        let Ok(r) = row else { continue };
        let tx = r.into_transaction(format!("stages-{line}"), 1_700_000_000_000);
        payloads.push(codec.encode("stages-tx", &tx).await?);
        if payloads.len() >= limit {
            break;
        }
    }
    let _ = id;
    // Warm the writer-schema cache.
    let _: Transaction = codec.decode(&payloads[0]).await?;
    let record = scorer::bootstrap_record("paysim", model_text, 0.5);
    let model = LoadedModel::from_record(&record)?;
    let n = payloads.len();
    // The scorer's batch size; each pass starts with empty account state. The noise on a shared
    // machine is one-sided (time stolen, never given), so each stage reports its fastest pass.
    let batch = 10_000;
    let passes: usize = std::env::var("PASSES").map_or(Ok(5), |s| s.parse())?;
    let mut best = [f64::MAX; 5];
    // LightGBM's own predict and SHAP on the same rows, for comparison (not in the total).
    let mut lightgbm_best = [f64::MAX; 2];
    let rules = rule_set()?;
    let mut rules_best = f64::MAX;
    let mut alerts = 0;
    for _ in 0..passes {
        let mut rules_secs = 0f64;
        let mut t = [0f64; 5];
        let mut lightgbm = [0f64; 2];
        let mut history = AccountHistory::default();
        alerts = 0;
        for (b, chunk) in payloads.chunks(batch).enumerate() {
            let s = Instant::now();
            let txs: Vec<Transaction> = chunk
                .iter()
                .map(|p| codec.decode_cached(p).unwrap().unwrap())
                .collect();
            t[0] += s.elapsed().as_secs_f64();
            let s = Instant::now();
            let mut rows = Vec::with_capacity(chunk.len() * N_FEATURES);
            // As the scorer does: hashes first, each state prefetched a few lookups ahead.
            let hashes: Vec<u64> = txs.iter().map(|tx| hash_name(&tx.name_orig)).collect();
            for (i, tx) in txs.iter().enumerate() {
                if let Some(&ahead) = hashes.get(i + PREFETCH_AHEAD) {
                    history.prefetch(ahead);
                }
                let position = (b * batch + i) as i64;
                let a =
                    history.observe_hashed(hashes[i], &tx.name_orig, position, tx.step, tx.amount);
                push_features(&TxView::from(tx), a, &mut rows);
            }
            t[1] += s.elapsed().as_secs_f64();
            let s = Instant::now();
            let scores = model.predict(&rows)?;
            t[2] += s.elapsed().as_secs_f64();
            let s = Instant::now();
            let mut hits = Vec::new();
            for (i, (tx, score)) in txs.iter().zip(&scores).enumerate() {
                hits.clear();
                let input = Input {
                    features: &rows[i * N_FEATURES..(i + 1) * N_FEATURES],
                    score: *score,
                    tx_type: tx.tx_type,
                    name_orig: &tx.name_orig,
                    name_dest: &tx.name_dest,
                    is_flagged_fraud: tx.is_flagged_fraud,
                };
                rules.evaluate(&input, &mut hits);
                std::hint::black_box(&hits);
            }
            rules_secs += s.elapsed().as_secs_f64();
            let s = Instant::now();
            let reference = model.lightgbm_predict(&rows)?;
            lightgbm[0] += s.elapsed().as_secs_f64();
            assert_eq!(reference, scores, "native scores differ from LightGBM's");
            let s = Instant::now();
            let mut alert_rows = Vec::new();
            for (i, sc) in scores.iter().enumerate() {
                if *sc >= 0.5 {
                    alert_rows.extend_from_slice(&rows[i * N_FEATURES..(i + 1) * N_FEATURES]);
                }
            }
            let reasons = model.top_reasons(&alert_rows, 3)?;
            alerts += reasons.len();
            t[3] += s.elapsed().as_secs_f64();
            let s = Instant::now();
            std::hint::black_box(model.lightgbm_contributions(&alert_rows)?);
            lightgbm[1] += s.elapsed().as_secs_f64();
            let s = Instant::now();
            let mut reasons = reasons.into_iter();
            for (tx, score) in txs.into_iter().zip(scores) {
                let p = Prediction {
                    transaction_id: tx.transaction_id,
                    name_orig: tx.name_orig,
                    tx_type: tx.tx_type,
                    amount: tx.amount,
                    event_time: tx.event_time,
                    scored_at: 1,
                    score,
                    is_alert: score >= 0.5,
                    threshold: 0.5,
                    model_name: "paysim".into(),
                    model_version: 1,
                    challenger_score: None,
                    challenger_version: None,
                    top_reasons: if score >= 0.5 {
                        reasons.next().unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                    rule_hits: Vec::new(),
                    rules_version: 0,
                };
                std::hint::black_box(Codec::encode_with_id(pid, &p)?);
            }
            t[4] += s.elapsed().as_secs_f64();
        }
        for (b, x) in best.iter_mut().zip(t) {
            *b = b.min(x);
        }
        for (b, x) in lightgbm_best.iter_mut().zip(lightgbm) {
            *b = b.min(x);
        }
        rules_best = rules_best.min(rules_secs);
    }
    let names = ["decode", "features", "predict", "reasons", "encode"];
    let total: f64 = best.iter().sum();
    for (name, secs) in names.iter().zip(best) {
        println!("{name:>10}: {:7.3} µs/record", secs * 1e6 / n as f64);
    }
    println!(
        "{:>10}: {:7.3} µs/record ({n} records, {alerts} alerts)",
        "total",
        total * 1e6 / n as f64
    );
    println!("{:>10}: {}", "native", model.is_native());
    for (name, secs) in ["lightgbm-predict", "lightgbm-reasons"]
        .iter()
        .zip(lightgbm_best)
    {
        println!("{name}: {:7.3} µs/record", secs * 1e6 / n as f64);
    }
    println!(
        "rules-{}: {:7.3} µs/record",
        rules.active(),
        rules_best * 1e6 / n as f64
    );
    Ok(())
}

/// The rules of `RULES_FILE` (none without it).
fn rule_set() -> anyhow::Result<RuleSet> {
    let mut set = RuleSet::default();
    let Ok(path) = std::env::var("RULES_FILE") else {
        return Ok(set);
    };
    for (i, line) in std::fs::read_to_string(&path)?.lines().enumerate() {
        let (action, expression) = line.split_once('\t').unwrap_or(("tag", line));
        let rule = Rule {
            id: format!("r{i}"),
            version: 1,
            expression: expression.to_string(),
            action: action.parse().map_err(anyhow::Error::msg)?,
            description: String::new(),
            owner: String::new(),
            enabled: true,
            updated_at: 0,
        };
        set.apply(&rule.id.clone(), Some(rule), i as i64)?;
    }
    Ok(set)
}
