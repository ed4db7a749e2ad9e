//! The trainer's model lifecycle against the real ClickHouse, broker and registry: bootstrap →
//! published champion that the scorer's loading code accepts; `watch` retrains once enough labelled
//! rows arrived, and picks up a config change without a restart; a worse model is not promoted;
//! `rollback` serves the previous champion again.

use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
use fraudstream_common::model::LoadedModel;
use fraudstream_common::testing::{
    cluster_clickhouse, free_port, local_clickhouse, local_kafka, service_args, start_clickhouse,
    unique_name, Process,
};
use fraudstream_schemas::ModelStatus;
use paysim::CsvReader;
use sink::rows::{LabelRow, TransactionRow};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use trainer::registry::{self, serving};
use trainer::{
    examples_from_clickhouse, examples_from_csv, immature, read_models, train, Publisher,
    Selection, TrainParams,
};

/// Simulated PaySim rows: `rows` of them, written to `dir/paysim.csv`.
fn simulate(dir: &Path, rows: u64) -> std::path::PathBuf {
    let path = dir.join("paysim.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    paysim::simulate::simulate(rows, 11, &mut out, |_| {}).unwrap();
    path
}

/// Every row of a CSV, in file order.
fn csv_rows(csv: &Path) -> Vec<paysim::PaySimRow> {
    let mut reader = CsvReader::open(csv).unwrap();
    let mut rows = Vec::new();
    while let Some((_, row)) = reader.next_row().unwrap() {
        rows.push(row.unwrap());
    }
    rows
}

/// Lands the CSV rows `from..to` in ClickHouse as the sink would: transactions and labels.
async fn land(ch: &ClickHouseArgs, csv: &Path, from: u64, to: u64) {
    land_with(ch, csv, from, to, |_, _| true).await
}

/// [`land`], with a label only where `labelled(step, is_fraud)`.
async fn land_with(
    ch: &ClickHouseArgs,
    csv: &Path,
    from: u64,
    to: u64,
    labelled: impl Fn(i32, bool) -> bool,
) {
    let mut reader = CsvReader::open(csv).unwrap();
    let client = ch.client();
    let mut txs = client
        .insert::<TransactionRow>("transactions")
        .await
        .unwrap();
    let mut labels = client.insert::<LabelRow>("labels").await.unwrap();
    let mut i = 0u64;
    while let Some((line, row)) = reader.next_row().unwrap() {
        if i >= to {
            break;
        }
        if i >= from {
            let r = row.unwrap();
            let id = format!("sim-{line}");
            let t = 1_700_000_000 + r.step as u32 * 3600;
            txs.write(&TransactionRow {
                transaction_id: id.clone(),
                event_time: t,
                event_ms: (i % 1000) as u16,
                step: r.step,
                tx_type: r.tx_type.as_str().into(),
                amount: r.amount,
                name_orig: r.name_orig.clone(),
                oldbalance_org: r.oldbalance_org,
                newbalance_orig: r.newbalance_orig,
                name_dest: r.name_dest.clone(),
                oldbalance_dest: r.oldbalance_dest,
                newbalance_dest: r.newbalance_dest,
                is_flagged_fraud: r.is_flagged_fraud as u8,
                kafka_partition: 0,
                kafka_offset: i as i64,
            })
            .await
            .unwrap();
            if !labelled(r.step, r.is_fraud) {
                i += 1;
                continue;
            }
            labels
                .write(&LabelRow {
                    transaction_id: id,
                    is_fraud: r.is_fraud as u8,
                    labelled_at: t + 86_400,
                    labelled_ms: 0,
                    source: "FILE".into(),
                    analyst: String::new(),
                    note: String::new(),
                })
                .await
                .unwrap();
        }
        i += 1;
    }
    txs.end().await.unwrap();
    labels.end().await.unwrap();
}

fn trainer_cmd(kafka: &KafkaArgs, ch: &ClickHouseArgs, topic: &str, sub: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.arg(sub)
        .args(service_args(kafka, Some(ch)))
        .args(["--models-topic", topic])
        .env("RUST_LOG", "warn");
    c
}

/// Waits for `p` to exit (a `watch --max-trainings 1` once it trained); fails after `secs`.
async fn exit_within(p: &mut Process, secs: u64) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(s) = p.try_wait().unwrap() {
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "watch did not retrain within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn champion_version(records: &[fraudstream_schemas::ModelRecord]) -> Option<i32> {
    serving(records, "paysim", ModelStatus::Champion).map(|r| r.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_watch_gate_and_rollback() {
    let kafka = local_kafka();
    let name = unique_name("trainer_life");
    let ch = local_clickhouse(&name);
    let topic = format!("{name}_models");
    ensure_topics(
        &kafka.admin().unwrap(),
        &[TopicSpec::new(&topic, 1).compacted()],
    )
    .await
    .unwrap();
    // 0. Before the database exists (nothing archived yet), `list` says so.
    let list = trainer_cmd(&kafka, &ch, &topic, "list").output().unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let empty = format!("(no archived versions of paysim in {name})");
    assert!(String::from_utf8_lossy(&list.stdout).contains(&empty));
    ch.migrate().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = simulate(dir.path(), 400_000);

    // 1. Bootstrap from the CSV: published as champion v1 and archived; the scorer's loader takes it.
    let (ex, bad) = examples_from_csv(&csv).unwrap();
    assert_eq!(bad, 0);
    let params = TrainParams {
        max_rounds: 60,
        ..TrainParams::default()
    };
    let good = train(&ex, &params).unwrap();
    assert!(good.metrics["pr_auc"] > 0.9, "{:?}", good.metrics);
    let publisher = Publisher {
        kafka: kafka.clone(),
        models_topic: topic.clone(),
        clickhouse: Some(ch.clone()),
        model_name: "paysim".into(),
        tolerance: 0.0,
        challenger_on_reject: true,
        force: false,
    };
    let first = publisher.gate_and_publish(&good, &ex).await.unwrap();
    let v1 = first.record.unwrap();
    assert_eq!((v1.version, v1.status), (1, ModelStatus::Champion));
    let records = read_models(&kafka, &topic).await.unwrap();
    let loaded =
        LoadedModel::from_record(&serving(&records, "paysim", ModelStatus::Champion).unwrap())
            .unwrap();
    let (rows, _) = ex.slice(0, 100);
    assert_eq!(loaded.predict(rows).unwrap().len(), 100);

    // 2. A worse model (trained on labels shifted against their rows, so it learnt noise) is not
    //    promoted: it becomes a challenger and the champion keeps serving.
    let mut noisy = trainer::Examples {
        rows: ex.rows.clone(),
        labels: ex.labels.clone(),
        ..Default::default()
    };
    noisy.labels.rotate_left(7919);
    let worse = train(
        &noisy,
        &TrainParams {
            max_rounds: 5,
            ..TrainParams::default()
        },
    )
    .unwrap();
    let outcome = publisher.gate_and_publish(&worse, &ex).await.unwrap();
    assert!(!outcome.decision.promote, "{:?}", outcome.decision);
    assert!(outcome.decision.champion_pr_auc.unwrap() > outcome.decision.candidate_pr_auc);
    assert_eq!(
        outcome.record.as_ref().map(|r| (r.version, r.status)),
        Some((2, ModelStatus::Challenger))
    );
    let records = read_models(&kafka, &topic).await.unwrap();
    assert_eq!(champion_version(&records), Some(1));

    // 3. watch: config with an unreachable min_rows first; nothing happens. Then the file is
    //    edited (no restart) and the next cycle retrains on the labelled rows in ClickHouse.
    land(&ch, &csv, 0, 300_000).await;
    let config = dir.path().join("watch.json");
    let state = dir.path().join("state.json");
    std::fs::write(
        &config,
        r#"{"min_rows": 1000000000, "limit": 300000, "poll_seconds": 0.3}"#,
    )
    .unwrap();
    let mut watch = trainer_cmd(&kafka, &ch, &topic, "watch")
        .args([
            "--config",
            config.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ])
        .args(["--max-trainings", "1", "--max-rounds", "40", "--force"])
        .args(["--report", dir.path().join("report").to_str().unwrap()])
        .spawn()
        .map(Process::from)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(watch.try_wait().unwrap().is_none(), "watch exited early");
    assert!(!state.exists(), "trained although min_rows was not reached");
    std::fs::write(
        &config,
        r#"{"min_rows": 100000, "limit": 300000, "poll_seconds": 0.3}"#,
    )
    .unwrap();
    assert!(exit_within(&mut watch, 180).await.success(), "watch failed");
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(st["last_count"], 300_000);
    assert_eq!(st["last_version"], 3);
    let records = read_models(&kafka, &topic).await.unwrap();
    assert_eq!(
        champion_version(&records),
        Some(3),
        "--force published v3 as champion"
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Precision-recall"));

    // 4. rollback: v1 (the champion before v3) serves again, and the archive says so.
    let out = trainer_cmd(&kafka, &ch, &topic, "rollback")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = read_models(&kafka, &topic).await.unwrap();
    let champion = serving(&records, "paysim", ModelStatus::Champion).unwrap();
    assert_eq!(champion.version, 1);
    assert!(
        LoadedModel::from_record(&champion).is_ok(),
        "the republished v1 loads"
    );
    let history = registry::history(&ch, "paysim").await.unwrap();
    assert_eq!(
        history.last().map(|r| (r.version, r.event.as_str())),
        Some((1, "rolled-back"))
    );
    let list = trainer_cmd(&kafka, &ch, &topic, "list").output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert_eq!(list.lines().count(), 4, "header + 3 versions:\n{list}");

    let _ = ch
        .server_client()
        .query(&format!("DROP DATABASE {}", ch.database))
        .execute()
        .await;
}

/// ClickHouse is killed and restarted while `watch` runs: the watcher logs the failed cycles and
/// goes on (it used to exit on an error while reading the examples), then trains once enough
/// labelled rows are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_a_clickhouse_restart() {
    let kafka = local_kafka();
    let name = unique_name("trainer_watch_restart");
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp) = (free_port(), free_port());
    let ch_dir = dir.path().join("clickhouse");
    let mut server = start_clickhouse(&ch_dir, http, tcp).await;
    let ch = ClickHouseArgs::new(&format!("http://127.0.0.1:{http}"), &name);
    ch.migrate().await.unwrap();
    let csv = simulate(dir.path(), 200_000);
    land(&ch, &csv, 0, 200_000).await;
    let topic = format!("{name}_models");
    let (config, state) = (dir.path().join("watch.json"), dir.path().join("state.json"));
    std::fs::write(
        &config,
        r#"{"min_rows": 1000000000, "limit": 200000, "poll_seconds": 0.3}"#,
    )
    .unwrap();
    let mut watch = trainer_cmd(&kafka, &ch, &topic, "watch")
        .args(["--config", config.to_str().unwrap()])
        .args(["--state", state.to_str().unwrap()])
        .args(["--max-trainings", "1", "--max-rounds", "40", "--force"])
        .args(["--report", dir.path().join("report").to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map(Process::from)
        .unwrap();
    // Killed once the watcher is past its start (where a missing ClickHouse is an error).
    let stdout = std::io::BufReader::new(watch.stdout.take().unwrap());
    let (watching, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in stdout.lines().map_while(Result::ok) {
            if line.starts_with("watching ") {
                let _ = watching.send(());
            }
        }
    });
    started
        .recv_timeout(Duration::from_secs(60))
        .expect("watch did not start watching");
    server.kill().unwrap();
    server.wait().unwrap();
    // Due as soon as ClickHouse answers again; meanwhile every cycle fails.
    std::fs::write(
        &config,
        r#"{"min_rows": 100000, "limit": 200000, "poll_seconds": 0.3}"#,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        watch.try_wait().unwrap().is_none(),
        "watch exited while ClickHouse was down"
    );
    let _server = start_clickhouse(&ch_dir, http, tcp).await;
    assert!(exit_within(&mut watch, 180).await.success(), "watch failed");
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(st["last_count"], 200_000);
    assert_eq!(st["trainings"], 1);
}

/// Frauds are reported within a dispute window, legitimate transactions confirmed when it closes:
/// the last window's labelled rows are all frauds. With the window as label maturity the trainer
/// leaves those transactions out (and counts what it left out); without it, it trains on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_maturity_leaves_out_transactions_whose_labels_are_still_on_the_way() {
    label_maturity(local_clickhouse(&unique_name("maturity"))).await;
}

/// The same reads on a ClickHouse cluster (`deploy/local/cluster.sh`), through the Distributed
/// tables in front of the replicated ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_maturity_reads_the_same_on_a_clickhouse_cluster() {
    let ch = cluster_clickhouse(&unique_name("maturity_cluster"));
    label_maturity(ch.clone()).await;
    ch.server_client()
        .query(&format!(
            "DROP DATABASE IF EXISTS {}{}",
            ch.database,
            ch.on_cluster()
        ))
        .execute()
        .await
        .unwrap();
}

async fn label_maturity(ch: ClickHouseArgs) {
    ch.migrate().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = simulate(dir.path(), 40_000);
    let (all, _) = examples_from_csv(&csv).unwrap();
    let last = all.last_step;
    // The window: at least a day, and long enough to hold the last 5 frauds (the simulated
    // month ends quietly). Event time is step hours: younger than it is a step after last - window.
    let rows = csv_rows(&csv);
    let fraud_steps: Vec<i32> = rows.iter().filter(|r| r.is_fraud).map(|r| r.step).collect();
    let window = (last - fraud_steps[fraud_steps.len() - 5] + 1).max(24);
    let maturity = Duration::from_secs(window as u64 * 3600);
    let young = |step: i32| step > last - window;
    land_with(&ch, &csv, 0, 40_000, |step, fraud| !young(step) || fraud).await;
    let (mut mature, mut mature_frauds, mut young_rows, mut young_frauds) = (0, 0, 0, 0);
    for r in &rows {
        match (young(r.step), r.is_fraud) {
            (false, f) => (mature, mature_frauds) = (mature + 1, mature_frauds + f as usize),
            (true, f) => (young_rows, young_frauds) = (young_rows + 1, young_frauds + f as u64),
        }
    }
    assert!(
        young_frauds > 0 && young_rows > 100,
        "the last day has fraud"
    );
    let selection = |maturity| Selection {
        limit: 1_000_000,
        maturity,
        ..Selection::default()
    };
    let naive = examples_from_clickhouse(&ch, &selection(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        naive.len(),
        mature + young_frauds as usize,
        "every labelled row, skewed"
    );
    let ex = examples_from_clickhouse(&ch, &selection(maturity))
        .await
        .unwrap();
    assert_eq!(
        ex.len(),
        mature,
        "only the transactions older than the window"
    );
    assert_eq!(
        ex.labels.iter().filter(|l| **l > 0.5).count(),
        mature_frauds
    );
    assert!(ex.last_step <= last - window);
    let left_out = immature(&ch, maturity).await.unwrap();
    assert_eq!(
        (left_out.transactions, left_out.labelled, left_out.frauds),
        (young_rows, young_frauds, young_frauds)
    );
}

/// Lands `rows` as transactions within one hour from `start`, amounts times `scale`, with a
/// prediction of model v1 each (the view compares with the serving model's reference).
async fn land_hour(
    ch: &ClickHouseArgs,
    rows: &[paysim::PaySimRow],
    tag: &str,
    start: u32,
    scale: f64,
) {
    let client = ch.client();
    let mut txs = client
        .insert::<TransactionRow>("transactions")
        .await
        .unwrap();
    for (i, r) in rows.iter().enumerate() {
        txs.write(&TransactionRow {
            transaction_id: format!("{tag}-{i}"),
            event_time: start + (i as u32 % 3000),
            event_ms: 0,
            step: r.step,
            tx_type: r.tx_type.as_str().into(),
            amount: r.amount * scale,
            name_orig: r.name_orig.clone(),
            oldbalance_org: r.oldbalance_org,
            newbalance_orig: r.newbalance_orig,
            name_dest: r.name_dest.clone(),
            oldbalance_dest: r.oldbalance_dest,
            newbalance_dest: r.newbalance_dest,
            is_flagged_fraud: 0,
            kafka_partition: 0,
            kafka_offset: i as i64,
        })
        .await
        .unwrap();
    }
    txs.end().await.unwrap();
    let sql = format!(
        "INSERT INTO predictions (transaction_id, event_time, scored_at, score, model_name, model_version) \
         SELECT transaction_id, event_time, event_time, 0.01, 'paysim', 1 FROM transactions WHERE transaction_id LIKE '{tag}-%'"
    );
    client.query(&sql).execute().await.unwrap();
}

/// The drift view against what the trainer archived: live traffic drawn like the training rows
/// is stable (PSI under 0.1 on every row feature); the same traffic with amounts ten times larger
/// shows amount shifted (PSI over 0.25) and nothing else moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_drift_flags_the_feature_that_moved_and_only_it() {
    let ch = local_clickhouse(&unique_name("drift"));
    ch.migrate().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = simulate(dir.path(), 20_000);
    let (ex, _) = examples_from_csv(&csv).unwrap();
    let references = trainer::drift::references(&ex, 0..ex.len(), &[0.01; 100]);
    trainer::drift::archive(&ch, "paysim", 1, &references)
        .await
        .unwrap();
    let rows = csv_rows(&csv);
    let psi = |ch: ClickHouseArgs| async move {
        ch.client()
            .query("SELECT feature, psi FROM feature_drift ORDER BY feature")
            .fetch_all::<(String, f64)>()
            .await
            .unwrap()
    };
    land_hour(&ch, &rows, "same", 1_700_000_000, 1.0).await;
    let stable = psi(ch.clone()).await;
    assert_eq!(
        stable.len(),
        8,
        "6 row features, type and score: {stable:?}"
    );
    for (feature, value) in &stable {
        assert!(*value < 0.1, "{feature} is stable: {value}");
    }
    // An hour later, only the shifted traffic is in the window.
    land_hour(&ch, &rows, "shifted", 1_700_010_000, 10.0).await;
    for (feature, value) in psi(ch.clone()).await {
        match feature.as_str() {
            "amount" => assert!(value > 0.25, "amount shifted: {value}"),
            _ => assert!(value < 0.1, "{feature} did not move: {value}"),
        }
    }
}

/// `trainer rules ...` as an analyst runs it: `<sub>` with the services' flags and `topic`.
fn rules_cmd(kafka: &KafkaArgs, ch: &ClickHouseArgs, topic: &str, sub: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .arg("rules")
        .args(service_args(kafka, Some(ch)))
        .args(["--rules-topic", topic])
        .args(sub)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The number after `label` in the output of `trainer rules test`.
fn count_after(output: &str, label: &str) -> u64 {
    let line = output
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in\n{output}"));
    line[line.find(':').unwrap() + 1..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Rules managed from the CLI on the real broker, registry and ClickHouse: a rule is added,
/// listed, updated (version 2), backtested (its counts equal ClickHouse's own count of the same
/// condition), disabled and deleted; a rule that does not compile is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_managed_and_backtested_from_the_cli() {
    let kafka = local_kafka();
    let ch = local_clickhouse(&unique_name("rules_cli"));
    ch.migrate().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = simulate(dir.path(), 8_000);
    land(&ch, &csv, 0, 8_000).await;
    let topic = unique_name("rules_cli");
    let rules = |sub: &[&str]| rules_cmd(&kafka, &ch, &topic, sub);

    let (ok, out) = rules(&[
        "add",
        "big",
        "--expr",
        "type == 'TRANSFER' && amount > 200000",
        "--action",
        "alert",
        "--owner",
        "ana",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = rules(&["add", "bad", "--expr", "amount >", "--action", "alert"]);
    assert!(
        !ok && out.contains("does not parse"),
        "refused with the reason: {out}"
    );
    let (ok, out) = rules(&["add", "typo", "--expr", "amout > 5", "--action", "tag"]);
    assert!(!ok && out.contains("unknown field `amout`"), "{out}");
    let (ok, out) = rules(&[
        "update",
        "big",
        "--expr",
        "type == 'TRANSFER' && amount > 300000 && orig_emptied == 1",
    ]);
    assert!(ok && out.contains("v2"), "{out}");
    let (_, out) = rules(&["list"]);
    assert!(
        out.contains("big") && out.contains("v2") && out.contains("1 rules (1 enabled)"),
        "{out}"
    );
    assert!(
        !out.contains("bad"),
        "a refused rule was never published: {out}"
    );

    let (ok, out) = rules(&["test", "big", "--hours", "100000"]);
    assert!(ok, "{out}");
    let direct = |sql: &str| {
        let ch = ch.clone();
        let sql = sql.to_string();
        async move { ch.client().query(&sql).fetch_one::<u64>().await.unwrap() }
    };
    let condition =
        "type = 'TRANSFER' AND amount > 300000 AND oldbalance_org > 0 AND newbalance_orig = 0";
    assert_eq!(
        count_after(&out, "transactions:"),
        direct("SELECT count() FROM transactions FINAL").await
    );
    let hits = direct(&format!(
        "SELECT count() FROM transactions FINAL WHERE {condition}"
    ))
    .await;
    assert!(hits > 0, "the data exercises the rule");
    assert_eq!(count_after(&out, "hits:"), hits, "{out}");
    let frauds = direct(&format!(
        "SELECT count() FROM (SELECT transaction_id FROM transactions FINAL WHERE {condition}) \
         ANY INNER JOIN (SELECT transaction_id, is_fraud FROM labels FINAL) AS l USING transaction_id WHERE is_fraud = 1"
    ))
    .await;
    assert_eq!(count_after(&out, "frauds hit:"), frauds, "{out}");

    let (ok, _) = rules(&["disable", "big"]);
    assert!(ok);
    let (_, out) = rules(&["show", "big"]);
    assert!(out.contains("v3 (disabled)"), "{out}");
    let (ok, _) = rules(&["delete", "big"]);
    assert!(ok);
    let (_, out) = rules(&["list"]);
    assert!(out.contains("0 rules"), "{out}");
}
