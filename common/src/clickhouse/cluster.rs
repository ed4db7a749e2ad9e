//! The cluster form of the DDL. On a ClickHouse cluster each table becomes a replicated table on
//! every replica (`<name>_local`) behind a Distributed table under the table's own name, sharded
//! by a hash of the transaction id: every copy of one transaction lands on one shard, where
//! ReplacingMergeTree and `FINAL` make it one row. Services keep reading and writing the plain
//! names, so their SQL is the same on one server and on a cluster.
//!
//! Statements run `ON CLUSTER`, so every replica gets them. A replica runs them with its own
//! default database, hence every name here is qualified with the database.

use regex::{Captures, Regex};
use std::sync::LazyLock;

static CREATE_TABLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)^CREATE TABLE IF NOT EXISTS (\w+) \((.*)\) ENGINE = (\w+)\(([^)]*)\)(.*)$")
        .unwrap()
});
static ALTER_TABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)^ALTER TABLE (\w+)\s+(.*)$").unwrap());
static CREATE_VIEW: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)^CREATE VIEW IF NOT EXISTS (\w+) AS\s(.*)$").unwrap());
static TABLE_REF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(FROM|JOIN)(\s+)(\w+)\b").unwrap());

/// Where a cluster's DDL goes, and what it knows of the single-server DDL as a whole.
pub struct ClusterDdl<'a> {
    cluster: &'a str,
    database: &'a str,
    /// The tables and views the migrations create: the names a view's query may read.
    names: Vec<String>,
    /// Each table's sharding key.
    keys: Vec<(String, &'static str)>,
}

impl<'a> ClusterDdl<'a> {
    /// `all`: every statement of the migrations, in order.
    pub fn new(cluster: &'a str, database: &'a str, all: &[String]) -> Self {
        let mut names = Vec::new();
        let mut keys = Vec::new();
        for stmt in all {
            if let Some(m) = CREATE_TABLE.captures(stmt) {
                keys.push((m[1].to_string(), sharding_key(&m[2])));
            }
            if let Some(m) = CREATED.captures(stmt) {
                names.push(m[1].to_string());
            }
        }
        ClusterDdl {
            cluster,
            database,
            names,
            keys,
        }
    }

    /// The cluster statements for one single-server statement, or why it has no cluster form.
    pub fn statements(&self, stmt: &str) -> Result<Vec<String>, String> {
        let (c, db) = (self.cluster, self.database);
        if let Some(m) = CREATE_TABLE.captures(stmt) {
            let (name, columns, engine, args, rest) = (&m[1], &m[2], &m[3], &m[4], &m[5]);
            // The replicas of a shard share one ZooKeeper path; each names itself by {replica}.
            let path = format!("'/clickhouse/tables/{{shard}}/{db}/{name}', '{{replica}}'");
            let args = if args.trim().is_empty() {
                path
            } else {
                format!("{path}, {args}")
            };
            return Ok(vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{name}_local ON CLUSTER {c} ({columns}) \
                     ENGINE = Replicated{engine}({args}){rest}"
                ),
                self.distributed(name, sharding_key(columns)),
            ]);
        }
        if let Some(m) = ALTER_TABLE.captures(stmt) {
            let (name, change) = (&m[1], &m[2]);
            let key = self
                .keys
                .iter()
                .find(|(t, _)| t == name)
                .map(|(_, k)| *k)
                .ok_or_else(|| format!("ALTER TABLE {name}: no CREATE TABLE for it"))?;
            // One replica runs the ALTER of the replicated table; the others follow through
            // ZooKeeper. ClickHouse refuses an ALTER ON CLUSTER of the Distributed table in front
            // (it is not replicated), so that one is made again from the new columns: it holds
            // no rows (the services insert synchronously, see `ClickHouseArgs::client`).
            return Ok(vec![
                format!("ALTER TABLE {db}.{name}_local ON CLUSTER {c} {change}"),
                format!("DROP TABLE IF EXISTS {db}.{name} ON CLUSTER {c}"),
                self.distributed(name, key),
            ]);
        }
        if let Some(m) = CREATE_VIEW.captures(stmt) {
            let query = TABLE_REF.replace_all(&m[2], |r: &Captures<'_>| {
                if self.names.iter().any(|n| n == &r[3]) {
                    format!("{}{}{db}.{}", &r[1], &r[2], &r[3])
                } else {
                    r[0].to_string()
                }
            });
            return Ok(vec![format!(
                "CREATE VIEW IF NOT EXISTS {db}.{} ON CLUSTER {c} AS\n{query}",
                &m[1]
            )]);
        }
        Err(format!(
            "no cluster form for this statement (only CREATE TABLE, ALTER TABLE and CREATE VIEW \
             have one): {}",
            stmt.lines().next().unwrap_or_default()
        ))
    }

    /// The Distributed table under the table's own name, in front of its replicated tables.
    fn distributed(&self, name: &str, key: &str) -> String {
        let (c, db) = (self.cluster, self.database);
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {c} AS {db}.{name}_local \
             ENGINE = Distributed({c}, {db}, {name}_local, {key})"
        )
    }
}

static CREATED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^CREATE (?:TABLE|VIEW) IF NOT EXISTS (\w+)").unwrap());

/// Duplicates of one transaction must meet on one shard to be merged into one row; a table
/// without transaction ids (the model archive) is spread at random.
fn sharding_key(columns: &str) -> &'static str {
    if columns.contains("transaction_id String") {
        "cityHash64(transaction_id)"
    } else {
        "rand()"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: &str = "CREATE TABLE IF NOT EXISTS labels (\n    transaction_id String,\n    \
                          is_fraud UInt8\n) ENGINE = ReplacingMergeTree()\nORDER BY transaction_id";

    fn ddl(all: &[&str]) -> ClusterDdl<'static> {
        let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        ClusterDdl::new("c1", "db", &all)
    }

    #[test]
    fn a_table_becomes_replicated_behind_a_distributed_table() {
        let out = ddl(&[LABELS]).statements(LABELS).unwrap();
        assert_eq!(
            out[0],
            "CREATE TABLE IF NOT EXISTS db.labels_local ON CLUSTER c1 (\n    transaction_id String,\n    \
             is_fraud UInt8\n) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/labels', \
             '{replica}')\nORDER BY transaction_id"
        );
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS db.labels ON CLUSTER c1 AS db.labels_local \
             ENGINE = Distributed(c1, db, labels_local, cityHash64(transaction_id))"
        );
    }

    #[test]
    fn a_table_without_transaction_ids_is_spread_at_random() {
        let out = ddl(&[])
            .statements(
                "CREATE TABLE IF NOT EXISTS models (v Int32) ENGINE = MergeTree() ORDER BY v",
            )
            .unwrap();
        assert!(out[0].contains(
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/models', '{replica}') ORDER BY v"
        ));
        assert!(out[1].ends_with("Distributed(c1, db, models_local, rand())"));
    }

    #[test]
    fn an_alter_changes_the_replicas_and_remakes_the_distributed_table() {
        let alter = ddl(&[LABELS])
            .statements("ALTER TABLE labels\n    ADD COLUMN note String")
            .unwrap();
        assert_eq!(
            alter,
            [
                "ALTER TABLE db.labels_local ON CLUSTER c1 ADD COLUMN note String",
                "DROP TABLE IF EXISTS db.labels ON CLUSTER c1",
                "CREATE TABLE IF NOT EXISTS db.labels ON CLUSTER c1 AS db.labels_local \
                 ENGINE = Distributed(c1, db, labels_local, cityHash64(transaction_id))"
            ]
        );
        assert!(ddl(&[])
            .statements("ALTER TABLE x ADD COLUMN y String")
            .is_err());
    }

    #[test]
    fn a_view_reads_the_tables_by_qualified_names() {
        let view = ddl(&[LABELS, "CREATE VIEW IF NOT EXISTS predictions AS SELECT 1"])
            .statements(
                "CREATE VIEW IF NOT EXISTS v AS SELECT x FROM predictions FINAL \
                 ANY LEFT JOIN (SELECT x FROM labels) USING x ARRAY JOIN xs AS y FROM (SELECT 1)",
            )
            .unwrap();
        assert_eq!(
            view,
            ["CREATE VIEW IF NOT EXISTS db.v ON CLUSTER c1 AS\nSELECT x FROM db.predictions FINAL \
              ANY LEFT JOIN (SELECT x FROM db.labels) USING x ARRAY JOIN xs AS y FROM (SELECT 1)"]
        );
    }

    #[test]
    fn every_migration_has_a_cluster_form() {
        let all: Vec<String> = crate::clickhouse::MIGRATIONS
            .iter()
            .flat_map(|(_, _, sql)| crate::clickhouse::statements(sql))
            .collect();
        let ddl = ClusterDdl::new("c1", "db", &all);
        assert!(ddl.names.contains(&"rule_hits".to_string()));
        for stmt in &all {
            let out = ddl.statements(stmt).unwrap();
            assert!(out.iter().all(|s| s.contains(" ON CLUSTER c1")), "{out:?}");
        }
        assert!(ddl.statements("INSERT INTO t VALUES (1)").is_err());
    }
}
