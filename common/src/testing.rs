//! Helpers for tests that run against the real local services (`deploy/local/up.sh`).
//! Every test gets its own topics and database, named after the test, so tests never share state.

use crate::clickhouse::ClickHouseArgs;
use crate::kafka::KafkaArgs;
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};

/// Broker, registry and ClickHouse of the local services, overridable by the usual env variables.
pub fn local_kafka() -> KafkaArgs {
    KafkaArgs::new(
        &std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:29092".into()),
        &std::env::var("SCHEMA_REGISTRY_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:28081/apis/ccompat/v7".into()),
    )
}

/// ClickHouse of the local services, with a database of the test's own.
pub fn local_clickhouse(database: &str) -> ClickHouseArgs {
    ClickHouseArgs::new(
        &std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:28123".into()),
        database,
    )
}

/// The multi-node services of `deploy/local/cluster.sh`: three brokers (RF=3) and the local
/// registry.
pub fn cluster_kafka() -> KafkaArgs {
    KafkaArgs::new(
        &std::env::var("CLUSTER_KAFKA_BROKERS")
            .unwrap_or_else(|_| "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094".into()),
        &local_kafka().schema_registry,
    )
}

/// The first of the two ClickHouse replicas of `deploy/local/cluster.sh`, in cluster form, with a
/// database of the test's own.
pub fn cluster_clickhouse(database: &str) -> ClickHouseArgs {
    let mut args = ClickHouseArgs::new(
        &std::env::var("CLUSTER_CLICKHOUSE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:18123".into()),
        database,
    );
    args.cluster = Some("fraudstream".into());
    args
}

/// A name unique to this test run: `<test>_<pid>_<counter>` (valid as topic and database name).
pub fn unique_name(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clean: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!(
        "{clean}_{}_{n}_{}",
        std::process::id(),
        crate::now_millis() % 100_000
    )
}

/// Reads `topic` from the beginning until `expected` messages arrived or `timeout` passed, and
/// returns what arrived. `read_committed` hides aborted and open transactions, as a real consumer
/// of the project's outputs would.
pub async fn read_topic(
    kafka: &KafkaArgs,
    topic: &str,
    read_committed: bool,
    expected: usize,
    timeout: std::time::Duration,
) -> crate::Result<Vec<rdkafka::message::OwnedMessage>> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = kafka
        .client_config()?
        .set("group.id", unique_name("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            // A topic nobody wrote to yet simply has no messages.
            Ok(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// The headers of a message as `key → value` (dead letters carry their reason and origin there).
pub fn headers_map(
    m: &rdkafka::message::OwnedMessage,
) -> std::collections::HashMap<String, String> {
    use rdkafka::message::{Headers, Message};
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                    (h.key.to_string(), value.into_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The command-line flags that point a fraudstream binary at `kafka` (and `clickhouse`), for tests
/// that run the services as child processes.
pub fn service_args(kafka: &KafkaArgs, clickhouse: Option<&ClickHouseArgs>) -> Vec<String> {
    let mut args = vec![
        "--brokers".to_string(),
        kafka.brokers.clone(),
        "--schema-registry".to_string(),
        kafka.schema_registry.clone(),
    ];
    if let Some(ch) = clickhouse {
        args.extend([
            "--clickhouse-url".to_string(),
            ch.url.clone(),
            "--clickhouse-database".to_string(),
            ch.database.clone(),
        ]);
        if let Some(cluster) = &ch.cluster {
            args.extend(["--clickhouse-cluster".to_string(), cluster.clone()]);
        }
    }
    args
}

/// A binary of another workspace crate (`producer`), next to the test's own build directory:
/// tests drive it as a user does, through its command line. `cargo test --workspace` builds it;
/// a test run of one crate alone needs `cargo build --release -p <name>` first.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary is in target/<profile>/deps")
        .join(name);
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build --release -p {name}` (or the whole workspace) first",
        bin.display()
    );
    bin
}

/// A process a test started (a service under test, a server). Dropping it kills the process if it
/// still runs, so a test that fails midway leaves nothing behind: an orphan keeps consuming, and it
/// holds the test's stdout open, so a piped `make test` would wait on it until CI's timeout.
pub struct Process(Child);

impl From<Child> for Process {
    fn from(child: Child) -> Self {
        Process(child)
    }
}

impl std::ops::Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A schema registry of the test's own on `port`, its schemas stored under `dir`
/// (`deploy/local/registry.sh`, as `make services` runs it), ready when this returns. Killed
/// when dropped; start it again on the same `dir` and it knows every schema and id it gave out.
pub async fn start_registry(port: u16, dir: &std::path::Path) -> Process {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/registry.sh");
    let child: Process = std::process::Command::new(script)
        .arg(port.to_string())
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting deploy/local/registry.sh")
        .into();
    let started = std::time::Instant::now();
    while !registry_answers(port) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the registry on port {port} did not start in 120 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    child
}

/// Whether the registry on `port` answers a subjects listing with 200.
fn registry_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let request = "GET /apis/ccompat/v7/subjects HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    let mut head = [0u8; 12];
    s.write_all(request.as_bytes()).is_ok()
        && s.read_exact(&mut head).is_ok()
        && head.ends_with(b"200")
}

/// Stops a process with SIGTERM and waits for it (a clean stop, as `make services-down` does).
pub fn terminate_and_wait(p: &mut Process) {
    let _ = std::process::Command::new("kill")
        .arg(p.id().to_string())
        .status();
    let _ = p.wait();
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A ClickHouse server of the test's own on `http`/`tcp` ports, its data under `dir` (the same
/// binary and config as the local service, `deploy/local/clickhouse-config.sh`), ready when this
/// returns. Killed when dropped; started again on the same `dir` it has the same tables and rows.
pub async fn start_clickhouse(dir: &std::path::Path, http: u16, tcp: u16) -> Process {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/local/clickhouse-config.sh");
    let ok = std::process::Command::new(script)
        .arg(dir)
        .args([http.to_string(), tcp.to_string()])
        .status()
        .expect("deploy/local/clickhouse-config.sh");
    assert!(ok.success(), "clickhouse-config.sh failed");
    let child: Process = std::process::Command::new("clickhouse-server")
        .arg(format!("--config-file={}/config.xml", dir.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("clickhouse-server (deploy/local/install.sh installs it)")
        .into();
    let ch = ClickHouseArgs::new(&format!("http://127.0.0.1:{http}"), "default");
    let started = std::time::Instant::now();
    while ch
        .server_client()
        .query("SELECT 1")
        .execute()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the ClickHouse on port {http} did not start in 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    child
}

/// An OTLP/HTTP endpoint that accepts every export and keeps nothing, for a test that checks
/// what a traced service writes to Kafka, not what it exports. Returns its base URL.
pub fn otlp_sink() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer_ok(stream));
        }
    });
    format!("http://{addr}")
}

fn answer_ok(mut stream: std::net::TcpStream) {
    use std::io::{BufRead, Read, Write};
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    loop {
        let (mut line, mut length) = (String::new(), 0usize);
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            line.clear();
        }
        if line != "\r\n" {
            return; // the connection closed
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err()
            || stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .is_err()
        {
            return;
        }
    }
}
