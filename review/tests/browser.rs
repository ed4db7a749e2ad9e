//! The review page end to end, in headless Chromium (Debian's `chromium` and `chromium-driver`)
//! driven through WebDriver, on alerts the real pipeline produced: producer → scorer → sink →
//! ClickHouse. An analyst logs in, opens an alert, confirms it, and exactly one analyst label for
//! that transaction lands in ClickHouse; a second click changes nothing; without logging in the
//! page and the actions are refused.
//!
//! `REVIEW_SCREENSHOTS=docs` also writes the queue and the alert page to `docs/` (the README's).

use fantoccini::{Client, ClientBuilder, Locator};
use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
use fraudstream_common::testing::{
    free_port, local_clickhouse, local_kafka, service_args, unique_name, workspace_bin, Process,
};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Pipeline {
    tx: String,
    labels: String,
    predictions: String,
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Simulated data through producer → scorer (a model trained on it, a low threshold: plenty of
/// alerts) → sink, into `ch`.
async fn pipeline(kafka: &KafkaArgs, ch: &ClickHouseArgs, dir: &Path) -> (Pipeline, Vec<Process>) {
    let name = |what: &str| unique_name(&format!("review_{what}"));
    let p = Pipeline {
        tx: name("tx"),
        labels: name("labels"),
        predictions: name("predictions"),
    };
    ensure_topics(
        &kafka.admin().unwrap(),
        &[TopicSpec::new(&p.tx, 2), TopicSpec::new(&p.labels, 2)],
    )
    .await
    .unwrap();
    let csv = dir.join("paysim.csv");
    run(Command::new(workspace_bin("producer"))
        .args(["simulate", "--rows", "300000", "--seed", "5", "--out"])
        .arg(&csv));
    let model = dir.join("model.txt");
    run(Command::new(workspace_bin("trainer"))
        .args(["bootstrap", "--no-publish", "--max-rounds", "20", "--csv"])
        .arg(&csv)
        .arg("--out")
        .arg(&model)
        .arg("--report")
        .arg(dir.join("report"))
        .args(service_args(kafka, Some(ch))));
    // An analyst rule, so that alerts carry rule hits too (shown before the SHAP reasons).
    let rules = name("rules");
    run(Command::new(workspace_bin("trainer"))
        .args(["rules", "--rules-topic", &rules])
        .args(service_args(kafka, Some(ch)))
        .args(["add", "big-transfer", "--action", "alert"])
        .args(["--expr", "type == 'TRANSFER' && amount > 1000000"]));
    let scorer = Command::new(workspace_bin("scorer"))
        .args(service_args(kafka, None))
        .args([
            "--instance-id",
            &name("scorer"),
            "--group",
            &name("scorers"),
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--transactions-topic",
            &p.tx,
            "--predictions-topic",
            &p.predictions,
        ])
        .args([
            "--alerts-topic",
            &name("alerts"),
            "--dlq-topic",
            &name("dlq"),
            "--models-topic",
            &name("models"),
        ])
        .args(["--rules-topic", &rules, "--threshold", "0.05", "--model"])
        .arg(&model)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let sink = Command::new(workspace_bin("sink"))
        .args(service_args(kafka, Some(ch)))
        .args([
            "--group",
            &name("sink"),
            "--metrics-addr",
            "127.0.0.1:0",
            "--batch-ms",
            "200",
        ])
        .args([
            "--transactions-topic",
            &p.tx,
            "--predictions-topic",
            &p.predictions,
        ])
        .args([
            "--labels-topic",
            &p.labels,
            "--dlq-topic",
            &name("sink_dlq"),
        ])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    // No labels from the file: every alert stays open for the analysts.
    run(Command::new(workspace_bin("producer"))
        .args([
            "publish",
            "--limit",
            "3000",
            "--label-delay",
            "0",
            "--input",
        ])
        .arg(&csv)
        .args([
            "--transactions-topic",
            &p.tx,
            "--labels-topic",
            &name("file_labels"),
        ])
        .args(service_args(kafka, None))
        .stdout(Stdio::null()));
    (p, vec![scorer.into(), sink.into()])
}

async fn count(ch: &ClickHouseArgs, sql: &str) -> u64 {
    ch.client().query(sql).fetch_one::<u64>().await.unwrap_or(0)
}

async fn wait_for(ch: &ClickHouseArgs, sql: &str, at_least: u64, secs: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let n = count(ch, sql).await;
        if n >= at_least || Instant::now() > end {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A raw HTTP/1.1 request (no cookie): what a script without a session gets.
fn raw(addr: &str, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

async fn browser(port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1280,900"]
        }),
    );
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::rustls()
            .expect("a WebDriver client")
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() < end => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver on {port}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_logs_in_confirms_an_alert_and_one_label_lands() {
    assert!(
        Path::new("/usr/bin/chromedriver").exists(),
        "chromium-driver is not installed: `make deps` installs chromium and chromium-driver"
    );
    let kafka = local_kafka();
    let ch = local_clickhouse(&unique_name("review"));
    ch.migrate().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (p, mut services) = pipeline(&kafka, &ch, dir.path()).await;
    let alerts = wait_for(
        &ch,
        "SELECT count() FROM predictions FINAL WHERE is_alert = 1",
        1,
        120,
    )
    .await;
    assert!(alerts > 0, "the pipeline produced alerts");

    let users = dir.path().join("users");
    let hash = review::auth::hash_password("correct horse").unwrap();
    std::fs::write(&users, format!("ana:{hash}\n")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let page: Process = Command::new(env!("CARGO_BIN_EXE_review"))
        .arg("serve")
        .args(service_args(&kafka, Some(&ch)))
        .args([
            "--listen",
            &addr,
            "--metrics-addr",
            "127.0.0.1:0",
            "--labels-topic",
            &p.labels,
        ])
        .arg("--users")
        .arg(&users)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap()
        .into();
    services.push(page);
    let driver_port = free_port();
    services.push(
        Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
            .into(),
    );
    let url = format!("http://{addr}");
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < end, "the review page did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Without a session: the page sends to the login, an action is refused.
    let anonymous = raw(
        &addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        anonymous.starts_with("HTTP/1.1 303") && anonymous.contains("location: /login"),
        "{anonymous}"
    );
    let body = "csrf=x&verdict=fraud";
    let forged = raw(&addr, &format!("POST /alerts/any/verdict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    assert!(forged.starts_with("HTTP/1.1 401"), "{forged}");

    let c = browser(driver_port).await;
    c.goto(&url).await.unwrap();
    assert!(c.current_url().await.unwrap().as_str().ends_with("/login"));
    log_in(&c, "ana", "wrong").await;
    assert!(
        shown(&c, Locator::Id("error")).await.is_ok(),
        "a wrong password is refused"
    );
    log_in(&c, "ana", "correct horse").await;

    assert!(
        shown(&c, Locator::Css("#queue .rule")).await.is_ok(),
        "alerts raised by the rule show its id in the queue"
    );
    let first = shown(&c, Locator::Css("#queue tr a"))
        .await
        .expect("an open alert in the queue");
    let id = first.text().await.unwrap();
    screenshot(&c, "review-queue.png").await;
    first.click().await.unwrap();
    assert!(
        shown(&c, Locator::Id("reasons")).await.is_ok(),
        "the alert's reasons"
    );
    screenshot(&c, "review-alert.png").await;
    // The same page in a second window, left open while the first gives the verdict.
    let detail = c.current_url().await.unwrap();
    let main = c.window().await.unwrap();
    let stale = c.new_window(true).await.unwrap().handle;
    c.switch_to_window(stale.clone()).await.unwrap();
    c.goto(detail.as_str()).await.unwrap();
    c.switch_to_window(main).await.unwrap();
    c.find(Locator::Css("input[name=note]"))
        .await
        .unwrap()
        .send_keys("card testing pattern")
        .await
        .unwrap();
    c.find(Locator::Id("confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = match c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("notice"))
        .await
    {
        Ok(n) => n.text().await.unwrap(),
        Err(e) => panic!(
            "no notice after confirming ({e}):\n{}",
            c.source().await.unwrap()
        ),
    };
    assert!(notice.contains("confirmed fraud"), "{notice}");
    let queue = shown(&c, Locator::Id("queue"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!queue.contains(&id), "a closed alert leaves the queue");

    let analyst =
        format!("SELECT count() FROM labels WHERE transaction_id = '{id}' AND source = 'ANALYST'");
    assert_eq!(
        wait_for(&ch, &analyst, 1, 30).await,
        1,
        "one analyst label landed"
    );
    let row: (u8, String, String) = ch
        .client()
        .query(&format!(
            "SELECT is_fraud, analyst, note FROM labels WHERE transaction_id = '{id}'"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(row, (1, "ana".into(), "card testing pattern".into()));

    // The same form clicked again on the stale page (a double click, a second analyst): the
    // verdict given stands and nothing new is published.
    c.switch_to_window(stale).await.unwrap();
    c.find(Locator::Id("dismiss"))
        .await
        .expect("the stale page still shows the form")
        .click()
        .await
        .unwrap();
    let notice = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("notice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        notice.contains("already closed: confirmed fraud by ana"),
        "{notice}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&ch, &analyst).await,
        1,
        "still exactly one analyst label"
    );
    c.close().await.unwrap();
    drop(services);
}

async fn screenshot(c: &Client, name: &str) {
    if let Ok(dir) = std::env::var("REVIEW_SCREENSHOTS") {
        let png = c.screenshot().await.unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(dir)
            .join(name);
        std::fs::write(&path, png).unwrap();
    }
}

/// The element once the page that has it loaded (a click that navigates returns before that).
async fn shown(
    c: &Client,
    l: Locator<'_>,
) -> Result<fantoccini::elements::Element, fantoccini::error::CmdError> {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(l)
        .await
}

/// Fills and sends the login form.
async fn log_in(c: &Client, user: &str, password: &str) {
    shown(c, Locator::Id("user"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    let field = c.find(Locator::Id("password")).await.unwrap();
    field.send_keys(password).await.unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}
