//! How services reach ClickHouse: over http or https (the public roots, or a private CA's file),
//! with a user and password.

mod cluster;

use clickhouse::Client;
pub use cluster::ClusterDdl;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// ClickHouse connection settings. Flatten into a service's clap arguments. Debug never shows the
/// password.
#[derive(Clone, clap::Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP endpoint: http://host:8123, or https://host:8443 (ClickHouse Cloud).
    #[arg(
        long = "clickhouse-url",
        env = "CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:28123"
    )]
    pub url: String,
    /// ClickHouse database.
    #[arg(
        long = "clickhouse-database",
        env = "CLICKHOUSE_DATABASE",
        default_value = "fraudstream"
    )]
    pub database: String,
    /// ClickHouse user.
    #[arg(
        long = "clickhouse-user",
        env = "CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,
    /// ClickHouse password.
    #[arg(
        long = "clickhouse-password",
        env = "CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub password: String,
    /// PEM file of the CA that signed ClickHouse's certificate, for an https URL whose
    /// certificate no public CA signed. Without it the public (webpki) roots are trusted.
    #[arg(long = "clickhouse-ca-file", env = "CLICKHOUSE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// A ClickHouse cluster (a name in the servers' `remote_servers`): the tables are created on
    /// every replica `ON CLUSTER`, replicated, behind Distributed tables sharded by transaction
    /// id. Unset: the single-server tables.
    #[arg(long = "clickhouse-cluster", env = "CLICKHOUSE_CLUSTER")]
    pub cluster: Option<String>,
}

impl std::fmt::Debug for ClickHouseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseArgs")
            .field("url", &fraudstream_schemas::redact_url(&self.url))
            .field("database", &self.database)
            .field("user", &self.user)
            .field("ca_file", &self.ca_file)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// Why ClickHouse cannot be reached, with what to set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("ClickHouse CA file {path}: {reason} (set CLICKHOUSE_CA_FILE to a PEM file)")]
    CaFile { path: String, reason: String },
    #[error("ClickHouse at {url}: {source}; {hint}")]
    Unreachable {
        url: String,
        hint: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
}

/// What to fix for a failed first query, from ClickHouse's or the TLS stack's words.
fn connect_hint(error: &str) -> &'static str {
    let e = error.to_lowercase();
    if e.contains("password") || e.contains("authentication") || e.contains("code: 516") {
        "check CLICKHOUSE_USER and CLICKHOUSE_PASSWORD"
    } else if e.contains("unknownissuer") || e.contains("certificate") {
        "the server's certificate is not trusted: set CLICKHOUSE_CA_FILE to its CA's PEM file"
    } else if e.contains("unknown user") || e.contains("code: 192") {
        "no such user: check CLICKHOUSE_USER"
    } else if e.contains("incompletemessage")
        || e.contains("connection closed before message")
        || e.contains("connectionreset")
    {
        "the server closed the connection at the first request: for a TLS port use https://"
    } else if e.contains("invalid http version")
        || e.contains("invalidcontenttype")
        || e.contains("corrupt message")
        || e.contains("received corrupt")
    {
        "the port speaks another protocol: use https:// for a TLS port, http:// for a plain one"
    } else {
        CLICKHOUSE_UNREACHABLE
    }
}

/// The hint when nothing says the settings are wrong: the server may simply not be up yet.
const CLICKHOUSE_UNREACHABLE: &str =
    "is ClickHouse running there? check CLICKHOUSE_URL (https:// for TLS)";

impl ConnectError {
    /// True when the settings are wrong (a retry cannot help), false when the server may just
    /// not be up yet.
    pub fn is_misconfiguration(&self) -> bool {
        !matches!(self, ConnectError::Unreachable { hint, .. } if *hint == CLICKHOUSE_UNREACHABLE)
    }
}

/// An error and all its causes, for matching words that only a cause carries.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = format!("{e} {e:?}");
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(" | {c} {c:?}"));
        cause = c.source();
    }
    out
}

/// An http(s) client trusting the public roots and the CA certificates in `ca_file`.
fn client_with_ca(ca_file: &Path) -> Result<Client, ConnectError> {
    let error = |reason: String| ConnectError::CaFile {
        path: ca_file.display().to_string(),
        reason,
    };
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let pem = std::fs::read(ca_file).map_err(|e| error(e.to_string()))?;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| error(format!("not a PEM certificate: {e}")))?;
        roots.add(cert).map_err(|e| error(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(error("no certificate in the file".into()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    // As the clickhouse crate's own client: idle connections go before the server's 3 s timeout.
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(2))
        .build(https);
    Ok(Client::with_http_client(http))
}

impl ClickHouseArgs {
    pub fn new(url: &str, database: &str) -> Self {
        ClickHouseArgs {
            url: url.into(),
            database: database.into(),
            user: "default".into(),
            password: String::new(),
            ca_file: None,
            cluster: None,
        }
    }

    /// A client bound to the database. Schema validation is off: it relies on system tables that
    /// ClickHouse 18.16 (Debian's) lacks, and our DDL is the contract anyway.
    pub fn client(&self) -> Client {
        let client = self.server_client().with_database(&self.database);
        match self.cluster {
            // An insert returns once every shard has its rows, not when they are queued here for
            // later: the sink commits its Kafka offsets on that answer.
            Some(_) => client.with_setting("insert_distributed_sync", "1"),
            None => client,
        }
    }

    /// A client with no database selected (to create it). A CA file that cannot be read leaves
    /// the public roots only (the TLS handshake then fails); [`ClickHouseArgs::check_connection`]
    /// reports the file itself at start.
    pub fn server_client(&self) -> Client {
        let base = match &self.ca_file {
            Some(path) => client_with_ca(path).unwrap_or_else(|e| {
                tracing::error!(error = %e, "ClickHouse CA file not used");
                Client::default()
            }),
            None => Client::default(),
        };
        base.with_url(&self.url)
            .with_user(&self.user)
            .with_password(&self.password)
            .with_validation(false)
    }

    /// One query, so that a wrong URL, password or CA fails at start with what to set.
    pub async fn check_connection(&self) -> Result<(), ConnectError> {
        if let Some(path) = &self.ca_file {
            client_with_ca(path)?;
        }
        let result = self
            .server_client()
            .query("SELECT 1")
            .fetch_one::<u8>()
            .await;
        result.map_err(|source| ConnectError::Unreachable {
            url: fraudstream_schemas::redact_url(&self.url),
            hint: connect_hint(&error_chain(&source)),
            source,
        })?;
        Ok(())
    }
}

/// The versioned DDL in `deploy/clickhouse/`, in order. Each file runs once per database; every
/// statement is idempotent (`IF NOT EXISTS`) so a half-applied file can simply run again.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "001_tables.sql",
        include_str!("../../../deploy/clickhouse/001_tables.sql"),
    ),
    (
        2,
        "002_views.sql",
        include_str!("../../../deploy/clickhouse/002_views.sql"),
    ),
    (
        3,
        "003_drift.sql",
        include_str!("../../../deploy/clickhouse/003_drift.sql"),
    ),
    (
        4,
        "004_rules.sql",
        include_str!("../../../deploy/clickhouse/004_rules.sql"),
    ),
    (
        5,
        "005_analyst_labels.sql",
        include_str!("../../../deploy/clickhouse/005_analyst_labels.sql"),
    ),
];

/// An `ALTER TABLE ... ADD COLUMN` that ran before (ClickHouse 18.16 has no `IF NOT EXISTS` for
/// columns): the file is being applied again after a failure part-way, so it is skipped.
fn already_added(stmt: &str, e: &clickhouse::error::Error) -> bool {
    stmt.trim_start().starts_with("ALTER TABLE")
        && e.to_string()
            .contains("column with this name already exists")
}

/// The statements of a SQL file: split at `;` line ends, `--` comment lines dropped (ClickHouse's
/// HTTP interface takes one statement per request).
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let code = line.trim();
        if code.is_empty() || code.starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if code.ends_with(';') {
            let stmt = current.trim().trim_end_matches(';').to_string();
            out.push(stmt);
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

impl ClickHouseArgs {
    /// ` ON CLUSTER <name>` when a cluster is set, else nothing: for DDL that every replica runs.
    pub fn on_cluster(&self) -> String {
        match &self.cluster {
            Some(c) => format!(" ON CLUSTER {c}"),
            None => String::new(),
        }
    }

    /// The rewrite of the migrations' statements into the cluster form, when a cluster is set.
    fn cluster_ddl(&self) -> Option<ClusterDdl<'_>> {
        let cluster = self.cluster.as_deref()?;
        let all: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|(_, _, sql)| statements(sql))
            .collect();
        Some(ClusterDdl::new(cluster, &self.database, &all))
    }

    /// Creates the database if needed and applies the migrations it has not seen yet (recorded in
    /// `schema_migrations`). Returns the versions applied now. Safe to call from every service at
    /// start, concurrently: statements are idempotent.
    pub async fn migrate(&self) -> crate::Result<Vec<u32>> {
        self.server_client()
            .query(&format!(
                "CREATE DATABASE IF NOT EXISTS {}{}",
                self.database,
                self.on_cluster()
            ))
            .execute()
            .await?;
        let client = self.client();
        client
            .query(
                "CREATE TABLE IF NOT EXISTS schema_migrations \
                 (version UInt32, name String, applied_at DateTime) ENGINE = TinyLog",
            )
            .execute()
            .await?;
        let done: Vec<u32> = client
            .query("SELECT version FROM schema_migrations")
            .fetch_all()
            .await?;
        let cluster_ddl = self.cluster_ddl();
        let mut applied = Vec::new();
        for (version, name, sql) in MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            let mut ddl = Vec::new();
            for stmt in statements(sql) {
                match &cluster_ddl {
                    Some(c) => ddl.extend(
                        c.statements(&stmt)
                            .map_err(crate::CommonError::ClusterDdl)?,
                    ),
                    None => ddl.push(stmt),
                }
            }
            for stmt in ddl {
                match client.query(&stmt).execute().await {
                    Err(e) if already_added(&stmt, &e) => {}
                    result => result?,
                }
            }
            client
                .query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, now())")
                .bind(*version)
                .bind(*name)
                .execute()
                .await?;
            tracing::info!(database = %self.database, version, name, "ClickHouse migration applied");
            applied.push(*version);
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn connect_hints_name_the_setting() {
        let hint = super::connect_hint;
        assert!(hint("Code: 193. DB::Exception: Wrong password for user x")
            .contains("CLICKHOUSE_PASSWORD"));
        assert!(hint("invalid peer certificate: UnknownIssuer").contains("CLICKHOUSE_CA_FILE"));
        assert!(hint("connection refused").contains("CLICKHOUSE_URL"));
    }

    #[test]
    fn debug_hides_the_password() {
        let mut args = super::ClickHouseArgs::new("https://u:urlsecret@h:8443", "db");
        args.password = "hunter2".into();
        let shown = format!("{args:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("urlsecret"),
            "{shown}"
        );
    }

    #[test]
    fn statements_are_split_and_comments_dropped() {
        let sql = "-- a comment\nCREATE TABLE a (x UInt8)\nENGINE = TinyLog;\n\n-- b\nCREATE VIEW v AS SELECT 1;\n";
        assert_eq!(
            super::statements(sql),
            vec![
                "CREATE TABLE a (x UInt8)\nENGINE = TinyLog".to_string(),
                "CREATE VIEW v AS SELECT 1".to_string()
            ]
        );
    }
}
