//! Kafka client configuration shared by every service (`topics` creates topics, `records`
//! reads and writes records the way the services need).
//!
//! Security settings (SASL, TLS, ...) are not modelled: any librdkafka property passes through with
//! `-X key=value` or `KAFKA_CONFIG="k=v,k=v"`, so the same binaries run against Redpanda Cloud or
//! Confluent Cloud.

use crate::{CommonError, Result};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use std::time::Duration;

/// Where Kafka and the schema registry are and how to talk to them. Flatten into a service's clap
/// arguments. Debug never shows a password or secret.
#[derive(Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port, comma separated).
    #[arg(
        long = "brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:29092"
    )]
    pub brokers: String,
    /// Schema registry URL (Confluent API). For Apicurio, append /apis/ccompat/v7.
    #[arg(
        long = "schema-registry",
        env = "SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:28081/apis/ccompat/v7"
    )]
    pub schema_registry: String,
    /// Schema registry basic-auth user (Confluent Cloud: the API key).
    #[arg(long = "schema-registry-user", env = "SCHEMA_REGISTRY_USER")]
    pub schema_registry_user: Option<String>,
    /// Schema registry basic-auth password (Confluent Cloud: the API secret).
    #[arg(
        long = "schema-registry-password",
        env = "SCHEMA_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    pub schema_registry_password: Option<String>,
    /// PEM file of the CA that signed the registry's certificate, when not a public one.
    #[arg(long = "schema-registry-ca-file", env = "SCHEMA_REGISTRY_CA_FILE")]
    pub schema_registry_ca_file: Option<std::path::PathBuf>,
    /// Extra librdkafka properties, e.g. -X security.protocol=SASL_SSL -X sasl.mechanism=PLAIN.
    /// Repeatable; a value is taken whole (-X debug=cgrp,fetch). Applied after --kafka-config.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// Extra librdkafka properties as one list, "k=v,k=v" (handy in an env file). A comma starts
    /// a new property only when a `key=` follows it, so "debug=cgrp,fetch,acks=all" is two.
    #[arg(
        long = "kafka-config",
        value_name = "K=V,K=V",
        env = "KAFKA_CONFIG",
        hide_env_values = true
    )]
    pub extra_list: Option<String>,
}

/// Whether a librdkafka property holds a secret (never logged).
pub fn is_secret_property(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.ends_with(".pem")
        || key == "sasl.jaas.config"
}

/// `k=v` with the value hidden when `k` is a secret.
fn redact_property(kv: &str) -> String {
    match kv.split_once('=') {
        Some((k, _)) if is_secret_property(k) => format!("{k}=<redacted>"),
        _ => kv.to_string(),
    }
}

impl std::fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let listed = self.extra_list.as_deref().map(split_properties);
        let props: Vec<String> = listed
            .iter()
            .flatten()
            .chain(&self.extra)
            .map(|kv| redact_property(kv))
            .collect();
        f.debug_struct("KafkaArgs")
            .field("brokers", &self.brokers)
            .field("registry", &self.registry())
            .field("properties", &props)
            .finish()
    }
}

/// Keeps the first errors librdkafka reports while connecting (their words say what went wrong).
#[derive(Default)]
struct ErrorRecorder(std::sync::Mutex<Vec<String>>);

impl ErrorRecorder {
    fn record(&self, message: &str) {
        let mut seen = self.0.lock().unwrap();
        if seen.len() < 20 {
            seen.push(message.to_string());
        }
    }
}

impl rdkafka::ClientContext for ErrorRecorder {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "librdkafka error while connecting");
        self.record(reason);
    }

    // Authentication and TLS failures are also logged by librdkafka's own threads, often before
    // any error event: the first warning or worse says what went wrong.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel::*;
        if matches!(level, Emerg | Alert | Critical | Error | Warning) {
            tracing::debug!(fac, log_message, "librdkafka while connecting");
            self.record(log_message);
        }
    }
}
impl rdkafka::consumer::ConsumerContext for ErrorRecorder {}

/// What to fix, from librdkafka's description of a failed connection.
fn kafka_hint(detail: &str) -> &'static str {
    let d = detail.to_lowercase();
    if d.contains("security.protocol") || d.contains("ssl listener") {
        "the listener expects TLS: set -X security.protocol=SASL_SSL (or SSL)"
    } else if d.contains("certificate verify failed") || d.contains("ssl handshake") {
        "the broker's certificate is not trusted: set -X ssl.ca.location to its CA's PEM file"
    } else if d.contains("authentication") {
        "the broker refused the credentials: check -X sasl.username, sasl.password and sasl.mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
    } else if d.contains("wrong version number") || d.contains("ssl") {
        "TLS failed: is this a TLS listener? (security.protocol=SASL_SSL needs one; PLAINTEXT/SASL_PLAINTEXT otherwise)"
    } else {
        KAFKA_UNREACHABLE
    }
}

/// The hint when nothing says the settings are wrong: the broker may simply not be up yet.
pub(crate) const KAFKA_UNREACHABLE: &str = "is Kafka running there? check KAFKA_BROKERS";

/// Splits "k=v,k=v" into properties. A comma followed by something that is not `key=` belongs
/// to the value (librdkafka lists such as `debug=cgrp,fetch`).
fn split_properties(list: &str) -> Vec<String> {
    let starts_property = |s: &str| {
        s.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
    };
    let mut out: Vec<String> = Vec::new();
    for part in list.split(',') {
        match out.last_mut() {
            Some(last) if !starts_property(part.trim_start()) => {
                last.push(',');
                last.push_str(part);
            }
            _ => out.push(part.to_string()),
        }
    }
    out.retain(|p| !p.trim().is_empty());
    out
}

impl KafkaArgs {
    /// Args pointing at `brokers` and `registry` with no extra properties (tests, tools).
    pub fn new(brokers: &str, registry: &str) -> Self {
        KafkaArgs {
            brokers: brokers.into(),
            schema_registry: registry.into(),
            schema_registry_user: None,
            schema_registry_password: None,
            schema_registry_ca_file: None,
            extra: Vec::new(),
            extra_list: None,
        }
    }

    /// The schema registry settings, credentials and CA included.
    pub fn registry(&self) -> fraudstream_schemas::RegistryConfig {
        fraudstream_schemas::RegistryConfig {
            url: self.schema_registry.clone(),
            user: self.schema_registry_user.clone(),
            password: self.schema_registry_password.clone(),
            ca_file: self.schema_registry_ca_file.clone(),
        }
    }

    /// A codec for the configured registry (its credentials and CA applied).
    pub fn codec(&self) -> Result<fraudstream_schemas::Codec> {
        Ok(fraudstream_schemas::Codec::with_config(&self.registry())?)
    }

    /// A librdkafka config with the brokers and every `-X` property applied.
    pub fn client_config(&self) -> Result<ClientConfig> {
        self.client_config_with(&[])
    }

    /// Like [`KafkaArgs::client_config`], with a service's own `defaults` applied first, so that
    /// a user's `-X` can still override any of them.
    pub fn client_config_with(&self, defaults: &[(&str, &str)]) -> Result<ClientConfig> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            cfg.set(*k, *v);
        }
        let listed = self.extra_list.as_deref().map(split_properties);
        for kv in listed.iter().flatten().chain(&self.extra) {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                CommonError::KafkaConfig(format!(
                    "-X {kv:?} is not KEY=VALUE (example: -X security.protocol=SASL_SSL)"
                ))
            })?;
            cfg.set(k.trim(), v.trim());
        }
        Ok(cfg)
    }

    /// Fetches the cluster's metadata once, so that a wrong address, protocol, password or CA
    /// fails at start with the setting to fix (librdkafka otherwise retries quietly for ever).
    pub fn check_connection(&self, timeout: Duration) -> Result<()> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let context = ErrorRecorder::default();
        let consumer: BaseConsumer<ErrorRecorder> = self
            .client_config()?
            // librdkafka's own log level follows the `log` crate's, off under tracing.
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Warning)
            .create_with_context(context)?;
        match consumer.fetch_metadata(None, timeout) {
            Ok(_) => Ok(()),
            Err(e) => {
                // Error events reach the context only when the client is polled, and the words
                // that say what to fix may come a moment after the failure: wait up to 3 s.
                let informative =
                    |seen: &[String]| seen.iter().any(|m| kafka_hint(m) != KAFKA_UNREACHABLE);
                let until = std::time::Instant::now() + Duration::from_secs(3);
                while std::time::Instant::now() < until {
                    let _ = consumer.poll(Duration::from_millis(100));
                    if informative(&consumer.context().0.lock().unwrap()) {
                        break;
                    }
                }
                let seen = consumer.context().0.lock().unwrap().clone();
                // The first message that says what to fix, else the first one at all.
                let detail = seen
                    .iter()
                    .find(|m| kafka_hint(m) != KAFKA_UNREACHABLE)
                    .or(seen.first())
                    .cloned()
                    .unwrap_or_else(|| e.to_string());
                let mut hint = kafka_hint(&detail);
                if hint == KAFKA_UNREACHABLE && !self.uses_tls()? && self.port_open() {
                    // A port that takes TCP but fails Kafka's first request in plaintext is a
                    // TLS listener: librdkafka only says "brokers are down".
                    hint = "the broker's port is open but the Kafka handshake failed: if it is a TLS listener, set -X security.protocol=SASL_SSL (or SSL)";
                }
                Err(CommonError::KafkaConnect {
                    brokers: self.brokers.clone(),
                    hint,
                    detail,
                })
            }
        }
    }

    /// Whether the configured security.protocol is SSL or SASL_SSL.
    fn uses_tls(&self) -> Result<bool> {
        let cfg = self.client_config()?;
        let protocol = cfg.get("security.protocol").unwrap_or("plaintext");
        Ok(protocol.to_ascii_lowercase().ends_with("ssl"))
    }

    /// Whether some bootstrap server accepts a TCP connection.
    fn port_open(&self) -> bool {
        use std::net::ToSocketAddrs;
        self.brokers.split(',').any(|b| {
            b.trim()
                .to_socket_addrs()
                .into_iter()
                .flatten()
                .any(|addr| {
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
                })
        })
    }

    /// An admin client on the same cluster.
    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        Ok(self.client_config()?.create()?)
    }

    /// A consumer for [`read_partition_range`]: assign-mode, committed data only, nothing
    /// committed back; `group_id` only names it to the broker.
    pub fn range_reader(&self, group_id: &str) -> Result<rdkafka::consumer::BaseConsumer> {
        Ok(self
            .client_config_with(&[
                ("group.id", group_id),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                // A range ends at a record boundary we know: do not sit in a 500 ms long poll.
                ("fetch.wait.max.ms", "10"),
                // It stays open between rebuilds: a bounded queue, refilled promptly (see
                // `MemoryArgs`).
                ("queued.max.messages.kbytes", "16384"),
                ("fetch.queue.backoff.ms", "5"),
                // After a broker restart a newly assigned partition's fetch meets an error that
                // librdkafka handles without reporting it, and backs off (500 ms by default): a
                // scorer's state rebuild took ~0.55 s a partition instead of ~50 ms (the faults
                // suite's `broker-restart`).
                ("fetch.error.backoff.ms", "20"),
            ])?
            .create()?)
    }
}

mod memory;
mod records;
mod topics;
pub use memory::*;
pub use records::*;
pub use topics::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn get(args: &KafkaArgs, key: &str) -> Option<String> {
        args.client_config().unwrap().get(key).map(str::to_string)
    }

    #[test]
    fn a_list_value_with_commas_stays_whole() {
        assert_eq!(
            split_properties("debug=cgrp,fetch,acks=all, linger.ms=5"),
            ["debug=cgrp,fetch", "acks=all", " linger.ms=5"]
        );
        let mut args = KafkaArgs::new("b:9092", "http://r");
        args.extra = vec!["debug=cgrp,fetch".into()];
        assert_eq!(get(&args, "debug").as_deref(), Some("cgrp,fetch"));
    }

    #[test]
    fn debug_hides_secret_properties() {
        let mut args = KafkaArgs::new("b:9092", "https://key:regsecret@r");
        args.extra = vec!["sasl.password=hunter2".into(), "sasl.username=u".into()];
        args.extra_list = Some("ssl.key.password=pw2".into());
        args.schema_registry_password = Some("regpw".into());
        let shown = format!("{args:?}");
        for secret in ["hunter2", "pw2", "regsecret", "regpw"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("sasl.username=u"), "{shown}");
    }

    #[test]
    fn connection_hints_name_the_setting() {
        let hint = kafka_hint;
        assert!(hint("SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512").contains("sasl.password"));
        assert!(hint(
            "ssl handshake failed: error:0A000086:SSL routines::certificate verify failed"
        )
        .contains("ssl.ca.location"));
        assert!(hint("Disconnected while requesting ApiVersion: might be caused by incorrect security.protocol configuration (connecting to a SSL listener?)").contains("security.protocol=SASL_SSL"));
    }

    #[test]
    fn x_flags_override_the_list() {
        let mut args = KafkaArgs::new("b:9092", "http://r");
        args.extra_list = Some("acks=1,debug=broker,topic".into());
        args.extra = vec!["acks=all".into()];
        assert_eq!(get(&args, "acks").as_deref(), Some("all"));
        assert_eq!(get(&args, "debug").as_deref(), Some("broker,topic"));
    }
}
