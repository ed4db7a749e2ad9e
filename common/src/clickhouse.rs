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
