//! How services reach ClickHouse.

use clickhouse::Client;

/// ClickHouse connection settings. Flatten into a service's clap arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP endpoint.
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
        hide_default_value = true
    )]
    pub password: String,
}

impl ClickHouseArgs {
    pub fn new(url: &str, database: &str) -> Self {
        ClickHouseArgs {
            url: url.into(),
            database: database.into(),
            user: "default".into(),
            password: String::new(),
        }
    }

    /// A client bound to the database. Schema validation is off: it relies on system tables that
    /// ClickHouse 18.16 (Debian's) lacks, and our DDL is the contract anyway.
    pub fn client(&self) -> Client {
        self.server_client().with_database(&self.database)
    }

    /// A client with no database selected (to create it).
    pub fn server_client(&self) -> Client {
        Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(&self.password)
            .with_validation(false)
    }
}

/// The versioned DDL in `deploy/clickhouse/`, in order. Each file runs once per database; every
/// statement is idempotent (`IF NOT EXISTS`) so a half-applied file can simply run again.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "001_tables.sql",
        include_str!("../../deploy/clickhouse/001_tables.sql"),
    ),
    (
        2,
        "002_views.sql",
        include_str!("../../deploy/clickhouse/002_views.sql"),
    ),
];

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
    /// Creates the database if needed and applies the migrations it has not seen yet (recorded in
    /// `schema_migrations`). Returns the versions applied now. Safe to call from every service at
    /// start, concurrently: statements are idempotent.
    pub async fn migrate(&self) -> crate::Result<Vec<u32>> {
        self.server_client()
            .query(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database))
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
        let mut applied = Vec::new();
        for (version, name, sql) in MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            for stmt in statements(sql) {
                client.query(&stmt).execute().await?;
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
