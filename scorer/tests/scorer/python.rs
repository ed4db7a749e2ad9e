use crate::support::*;
use fraudstream_common::testing::local_clickhouse;

/// Runs a command, failing the test with its output when it does not succeed.
fn run(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

/// The Python packages (lightgbm, pandas), installed once into the cache. The directory is the
/// script's stdout: pip's own messages go to stderr (a dependency-conflict warning there, as the
/// last line of both, once became the PYTHONPATH).
fn python_path() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/python-deps.sh");
    let out = Command::new(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{script:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .expect("python-deps.sh prints the directory")
        .to_string()
}

/// `scripts/python-train.py` on `features`: the model text at `out`, its scores (one per row).
fn train_in_python(features: &Path, out: &Path, shuffle: Option<u64>) -> Vec<f64> {
    let scores = out.with_extension("scores");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/python-train.py");
    let mut command = Command::new("python3");
    command
        .env("PYTHONPATH", python_path())
        .arg(script)
        .arg("--features")
        .arg(features)
        .arg("--out")
        .arg(out)
        .arg("--scores")
        .arg(&scores);
    if let Some(seed) = shuffle {
        command.args(["--shuffle-seed", &seed.to_string()]);
    }
    run(&mut command);
    std::fs::read_to_string(scores)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// A model trained in Python from a pandas frame with its columns shuffled, imported with
/// `trainer import` and served: every prediction's score is Python's own score of that row, which
/// is also the score of the same model trained with the columns in the scorer's order. A model
/// naming a feature the scorer does not compute is refused with the difference.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_trained_in_python_with_its_columns_reordered_scores_the_same() {
    let kafka = local_kafka();
    let clickhouse = local_clickhouse("fraudstream_test_python");
    let t = Topics::create(&kafka, "python", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let (csv, rows) = simulate(dir.path(), 40_000, 31);
    let features = dir.path().join("features.csv");
    let trainer = workspace_bin("trainer");
    run(Command::new(&trainer)
        .arg("features")
        .arg("--csv")
        .arg(&csv)
        .arg("--out")
        .arg(&features));
    let (in_order, shuffled) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    let want = train_in_python(&features, &shuffled, Some(3));
    assert_eq!(want.len() as u64, rows);
    assert_eq!(
        train_in_python(&features, &in_order, None),
        want,
        "the same model trained in column order scores the same"
    );
    let text = std::fs::read_to_string(&shuffled).unwrap();
    assert!(
        !text.contains("feature_names=step hour_of_day"),
        "the columns really were shuffled"
    );

    let import = |model: &Path| {
        let mut command = Command::new(&trainer);
        command
            .arg("import")
            .args(service_args(&kafka, Some(&clickhouse)))
            .args(["--force", "--models-topic", &t.models])
            .arg("--model")
            .arg(model)
            .arg("--csv")
            .arg(&csv)
            .arg("--report")
            .arg(dir.path().join("report"));
        command
    };
    let unknown = dir.path().join("unknown.txt");
    std::fs::write(&unknown, text.replace("orig_emptied", "emptied")).unwrap();
    let refused = import(&unknown).output().unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        why.contains("\"emptied\"") && why.contains("\"orig_emptied\""),
        "{why}"
    );
    assert!(run(&mut import(&shuffled)).contains("published paysim v"));

    let mut scorer = scorer(&kafka, &t, &unique_name("python"));
    assert!(publish(&kafka, &csv, &t)
        .args(["--id-prefix", "py"])
        .status()
        .unwrap()
        .success());
    let (quiet, most) = (Duration::from_secs(2), Duration::from_secs(90));
    let codec = Codec::new(&kafka.schema_registry);
    let mut seen = HashSet::new();
    for m in drain(&kafka, &t.predictions, rows as usize, quiet, most) {
        let p: Prediction = codec.decode(m.payload().unwrap()).await.unwrap();
        // Ids are py-<line>; the header is line 1, so line n is row n - 2.
        let line: usize = p.transaction_id["py-".len()..].parse().unwrap();
        let python = want[line - 2];
        assert!(
            (p.score - python).abs() <= 1e-12,
            "{}: scorer {} vs Python {python}",
            p.transaction_id,
            p.score
        );
        assert!(seen.insert(line), "{}: scored twice", p.transaction_id);
    }
    assert_eq!(seen.len() as u64, rows, "every transaction scored");
    terminate_and_wait(&mut scorer);
}
