//! What `make up` and the dashboards rely on, checked here: every ClickHouse panel query of the
//! Grafana dashboards (macros expanded to a time range) runs on the real ClickHouse against data
//! the sink wrote, and returns rows, on one server and on a replicated cluster (`make cluster`);
//! the same DDL and queries run on current ClickHouse through
//! chDB when it is installed; the dashboards' JSON names provisioned datasources; Prometheus'
//! config passes promtool; the compose file has the services, ports and start order it needs.

mod support;

use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::kafka::KafkaArgs;
use fraudstream_common::testing::{
    cluster_clickhouse, cluster_kafka, local_clickhouse, local_kafka,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (dashboard file, panel title, datasource uid, query) for every panel target.
fn panel_queries() -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for panel in json["panels"].as_array().unwrap() {
            for t in panel["targets"].as_array().unwrap() {
                let uid = t["datasource"]["uid"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: a target without datasource", panel["title"]))
                    .to_string();
                let query = t["rawSql"]
                    .as_str()
                    .or(t["expr"].as_str())
                    .unwrap()
                    .to_string();
                out.push((
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    panel["title"].as_str().unwrap().to_string(),
                    uid,
                    query,
                ));
            }
        }
    }
    out
}

/// Grafana ClickHouse plugin macros, expanded to a fixed range (the test data's).
fn expand(sql: &str, from: u64, to: u64) -> String {
    let mut out = sql.to_string();
    while let Some(start) = out.find("$__timeFilter(") {
        let end = start + out[start..].find(')').unwrap();
        let column = &out[start + "$__timeFilter(".len()..end];
        let cond = format!("{column} >= toDateTime({from}) AND {column} <= toDateTime({to})");
        out.replace_range(start..=end, &cond);
    }
    out.replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({to})"))
}

#[test]
fn dashboards_name_provisioned_datasources() {
    let provisioned =
        std::fs::read_to_string(repo().join("grafana/provisioning/datasources/datasources.yml"))
            .unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&provisioned).unwrap();
    let uids: Vec<&str> = yaml["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_str().unwrap())
        .collect();
    let queries = panel_queries();
    assert!(
        queries.len() >= 15,
        "both dashboards' panels: {}",
        queries.len()
    );
    for (file, title, uid, _) in &queries {
        assert!(
            uids.contains(&uid.as_str()),
            "{file} / {title}: datasource {uid} is not provisioned ({uids:?})"
        );
    }
    let alerts: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("grafana/provisioning/alerting/rules.yml")).unwrap(),
    )
    .unwrap();
    let titles: Vec<&str> = alerts["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Fraud alert rate spike",
            "Scorer lag growing",
            "Dead letters non-zero",
            "Feature drift"
        ]
    );
}

/// The ClickHouse plugin's `format`: 0 = time series, 1 = table. A table panel fed a time series
/// frame errors when rows are not ascending by time ("Latest alerts" sorts newest first), and a
/// time series panel fed a table never splits one series per label (the version timeline).
#[test]
fn clickhouse_panels_ask_for_the_format_their_panel_draws() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in json["panels"].as_array().unwrap() {
            for t in panel["targets"].as_array().unwrap() {
                if t["datasource"]["type"] != "grafana-clickhouse-datasource" {
                    continue;
                }
                let (format, query_type) = match panel["type"].as_str().unwrap() {
                    "timeseries" => (0, "timeseries"),
                    "table" | "barchart" | "stat" | "piechart" | "bargauge" => (1, "table"),
                    other => panic!("{}: panel type {other} has no known format", panel["title"]),
                };
                assert_eq!(
                    (
                        t["format"].as_i64(),
                        t["queryType"].as_str(),
                        t["editorType"].as_str()
                    ),
                    (Some(format), Some(query_type), Some("sql")),
                    "{} / {} ({}): format, queryType, editorType",
                    path.display(),
                    panel["title"],
                    panel["type"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "ClickHouse panels checked: {checked}");
}

fn version(s: &str) -> (u32, u32) {
    let mut it = s.split('.').map(|p| p.parse::<u32>().unwrap());
    (it.next().unwrap(), it.next().unwrap_or(0))
}

/// The image builds: its Rust is at least the workspace's rust-version, which is at least every
/// locked crate's (a crate that needs a newer Rust fails the image build), and every member
/// inherits it (clippy's incompatible_msrv then flags std APIs newer than the claim).
#[test]
fn dockerfile_rust_is_at_least_every_locked_crates_rust_version() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let (mut highest, mut who) = ((0, 0), String::new());
    for p in meta["packages"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        if members.contains(&id) {
            assert_eq!(
                p["rust_version"].as_str(),
                Some(env!("CARGO_PKG_RUST_VERSION")),
                "{} must inherit the workspace rust-version",
                p["name"]
            );
        } else if let Some(v) = p["rust_version"].as_str() {
            if version(v) > highest {
                (highest, who) = (version(v), format!("{} {}", p["name"], p["version"]));
            }
        }
    }
    let workspace = version(env!("CARGO_PKG_RUST_VERSION"));
    assert!(
        workspace >= highest,
        "workspace rust-version {workspace:?} is below {who}'s {highest:?}: raise it in Cargo.toml"
    );
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .expect("the build stage is FROM rust:<version>-...");
    let image_version = version(image.split(['-', ' ']).next().unwrap());
    assert!(
        image_version >= workspace,
        "deploy/Dockerfile builds on rust:{image}, below the workspace's rust-version {workspace:?}"
    );
}

#[test]
fn compose_file_has_services_ports_and_start_order() {
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap())
            .unwrap();
    let services = compose["services"].as_mapping().unwrap();
    for name in [
        "redpanda",
        "console",
        "clickhouse",
        "prometheus",
        "grafana",
        "init",
        "producer",
        "scorer",
        "sink",
        "trainer",
    ] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    assert_eq!(
        compose["services"]["scorer"]["deploy"]["replicas"].as_u64(),
        Some(2)
    );
    for (service, dep, condition) in [
        ("init", "redpanda", "service_healthy"),
        ("init", "clickhouse", "service_healthy"),
        ("scorer", "init", "service_completed_successfully"),
        ("sink", "init", "service_completed_successfully"),
        ("producer", "init", "service_completed_successfully"),
        ("trainer", "sink", "service_healthy"),
    ] {
        assert_eq!(
            compose["services"][service]["depends_on"][dep]["condition"].as_str(),
            Some(condition),
            "{service} → {dep}"
        );
    }
    for (service, port) in [
        ("grafana", "3000:3000"),
        ("clickhouse", "8123:8123"),
        ("prometheus", "9090:9090"),
        ("console", "8080:8080"),
    ] {
        let ports: Vec<&str> = compose["services"][service]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(ports.contains(&port), "{service}: {ports:?}");
    }
    // Every service scraped by Prometheus listens where the scrape config looks.
    let prom = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap();
    for target in ["sink:9103", "producer:9101", "port: 9102"] {
        assert!(prom.contains(target), "{target}");
    }
}

#[test]
fn prometheus_config_passes_promtool() {
    let Ok(out) = Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(repo().join("deploy/prometheus/prometheus.yml"))
        .output()
    else {
        panic!("promtool is missing: `make deps` installs it (Debian package prometheus)");
    };
    // The config names rules.yml by its in-container path; check it directly too.
    assert!(
        out.status.success()
            || String::from_utf8_lossy(&out.stderr).contains("/etc/prometheus/rules.yml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo().join("deploy/prometheus/rules.yml"))
        .output()
        .unwrap();
    assert!(
        rules.status.success(),
        "{}{}",
        String::from_utf8_lossy(&rules.stdout),
        String::from_utf8_lossy(&rules.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clickhouse_panel_query_runs_on_sink_data_and_returns_rows() {
    let names = Names::new("dashboards");
    let ch = local_clickhouse(&names.group);
    panels_return_what_the_data_says(&local_kafka(), &ch, &names).await;
    chdb_runs_the_panel_queries();
    drop_database(&ch).await;
}

/// The same SQL on a cluster (`deploy/local/cluster.sh`): the sink lands through Distributed
/// tables into replicated ones, and every panel reads the plain names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clickhouse_panel_query_runs_on_a_clickhouse_cluster() {
    let names = Names::new("dashboards_cluster");
    let ch = cluster_clickhouse(&names.group);
    panels_return_what_the_data_says(&cluster_kafka(), &ch, &names).await;
    // Both replicas hold every row: the second one got them through replication.
    let mut replica = ch.clone();
    replica.url = std::env::var("CLUSTER_CLICKHOUSE_URL_2")
        .unwrap_or_else(|_| "http://127.0.0.1:18124".into());
    wait_for_rows(
        &replica,
        "predictions_local",
        20_000,
        Duration::from_secs(60),
    )
    .await;
    drop_database(&ch).await;
}

/// The panels' time range around the test data, which spans 1700000000 .. 1700000140 (7 ms apart).
const TEST_RANGE: (u64, u64) = (1_699_999_000, 1_700_001_000);

async fn panels_return_what_the_data_says(kafka: &KafkaArgs, ch: &ClickHouseArgs, names: &Names) {
    const N: u64 = 20_000;
    names.create(kafka).await;
    publish_predictions(kafka, &names.predictions, 0..N, 0, 0).await;
    publish_labels(kafka, &names.labels, 0..N / 2).await;
    let child = sink(kafka, ch, names, &[]);
    wait_for_rows(ch, "predictions", N, Duration::from_secs(60)).await;
    wait_for_rows(ch, "labels", N / 2, Duration::from_secs(60)).await;
    terminate(child);
    // The drift panel compares with the serving model's training rows, which the trainer
    // archives when it publishes: a reference for the score (half below 0.5, half above). One
    // for each version: the test's last second holds both, and which one the view takes as
    // serving (argMax over second-resolution times) depends on the order rows are read in.
    ch.client()
        .query(
            "INSERT INTO drift_reference SELECT model_name, model_version, 'score', [0.5], \
             [0.5, 0.5], now() FROM predictions GROUP BY model_name, model_version",
        )
        .execute()
        .await
        .unwrap();

    let (from, to) = TEST_RANGE;
    let mut checked = 0;
    for (file, title, uid, query) in panel_queries().into_iter().filter(|q| q.2 == "clickhouse") {
        let sql = expand(&query, from, to);
        let body = ch
            .client()
            .query(&sql)
            .fetch_bytes("JSONEachRow")
            .unwrap_or_else(|e| panic!("{file} / {title}: {e}\n{sql}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{file} / {title} ({uid}): {e}\n{sql}"));
        let rows = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        assert!(rows > 0, "{file} / {title}: no rows\n{sql}");
        checked += 1;
    }
    assert_eq!(checked, 13, "every ClickHouse panel of the overview");

    // The live precision/recall panel computes what the labels say: alerts are every 100th
    // prediction and all fraud; every 1000th + 1 is a missed fraud.
    let sql = expand(
        &panel_queries()
            .into_iter()
            .find(|q| q.1.starts_with("Live precision"))
            .unwrap()
            .3,
        from,
        to,
    );
    let body = ch
        .client()
        .query(&sql)
        .fetch_bytes("JSONEachRow")
        .unwrap()
        .collect()
        .await
        .unwrap();
    let row: serde_json::Value =
        serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(row["precision"].as_f64(), Some(1.0), "{row}");
    let recall = row["recall"].as_f64().unwrap();
    assert!((recall - 100.0 / 110.0).abs() < 1e-9, "{row}");
}

/// Current ClickHouse (chDB), when installed: the same DDL and queries.
fn chdb_runs_the_panel_queries() {
    let (from, to) = TEST_RANGE;
    if Command::new("python3")
        .args(["-c", "import chdb"])
        .env("PYTHONPATH", chdb_path())
        .status()
        .is_ok_and(|s| s.success())
    {
        let queries: Vec<String> = panel_queries()
            .into_iter()
            .filter(|q| q.2 == "clickhouse")
            .map(|q| expand(&q.3, from, to))
            .collect();
        let out = Command::new("python3")
            .arg(repo().join("deploy/clickhouse/check_chdb.py"))
            .arg(serde_json::to_string(&queries).unwrap())
            .env("PYTHONPATH", chdb_path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chDB: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!(
            "note: chDB not installed; current-ClickHouse check skipped (`make deps` installs it)"
        );
    }
}

fn chdb_path() -> String {
    std::env::var("FRAUDSTREAM_CHDB").unwrap_or_else(|_| {
        format!(
            "{}/.cache/fraudstream/chdb",
            std::env::var("HOME").unwrap_or_default()
        )
    })
}
