//! A batch's rows on their way to their destination. For ClickHouse they are streamed: each table
//! has one open INSERT that receives rows as they are decoded and sends them in 256 KiB chunks,
//! so the sink holds a few chunks per table, not the batch (whose 200k rows took ~100 MiB as
//! structs). The INSERT ends when the batch is handed over; only then does ClickHouse answer.
//!
//! A failed stream loses nothing: the batch's offsets are not committed, and the writer inserts
//! the batch again from its records in Kafka ([`crate::writer`]). BigQuery takes predictions only,
//! gathered in memory as before.

use crate::rows::{LabelRow, PredictionRow, TransactionRow};
use clickhouse::insert::Insert;
use std::time::Duration;

/// A decoded record, for one of the three tables.
pub(crate) enum Decoded {
    Prediction(fraudstream_schemas::Prediction),
    Transaction(fraudstream_schemas::Transaction),
    Label(fraudstream_schemas::Label),
}

/// Where one batch's rows go.
pub(crate) enum Rows {
    ClickHouse(Box<Streams>),
    #[cfg(feature = "bigquery")]
    BigQuery(Vec<PredictionRow>),
}

impl Rows {
    /// Adds a decoded record read at (`partition`, `offset`).
    pub(crate) async fn push(&mut self, decoded: Decoded, partition: i32, offset: i64) {
        match self {
            Rows::ClickHouse(s) => s.push(decoded, partition, offset).await,
            #[cfg(feature = "bigquery")]
            Rows::BigQuery(v) => {
                if let Decoded::Prediction(p) = decoded {
                    v.push(PredictionRow::from(p));
                }
            }
        }
    }

    /// Rows per table: transactions, predictions, labels.
    pub(crate) fn counts(&self) -> [usize; 3] {
        match self {
            Rows::ClickHouse(s) => [s.transactions.rows, s.predictions.rows, s.labels.rows],
            #[cfg(feature = "bigquery")]
            Rows::BigQuery(v) => [0, v.len(), 0],
        }
    }
}

/// One open INSERT per table, opened at the table's first row.
pub(crate) struct Streams {
    client: clickhouse::Client,
    transactions: Table<TransactionRow>,
    predictions: Table<PredictionRow>,
    labels: Table<LabelRow>,
    /// The first failure; the rows after it are only counted (the writer inserts the batch
    /// again from Kafka).
    failed: Option<clickhouse::error::Error>,
}

struct Table<R: clickhouse::Row> {
    name: &'static str,
    insert: Option<Insert<R>>,
    rows: usize,
}

impl<R: clickhouse::Row> Table<R> {
    fn new(name: &'static str) -> Self {
        Table {
            name,
            insert: None,
            rows: 0,
        }
    }
}

/// A chunk that ClickHouse does not take within this long fails the stream (the batch is then
/// written again from Kafka), so a hung server cannot stall the reading loop for long.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

impl Streams {
    pub(crate) fn new(client: clickhouse::Client) -> Self {
        Streams {
            client,
            transactions: Table::new("transactions"),
            predictions: Table::new("predictions"),
            labels: Table::new("labels"),
            failed: None,
        }
    }

    pub(crate) async fn push(&mut self, decoded: Decoded, partition: i32, offset: i64) {
        let (client, failed) = (&self.client, &mut self.failed);
        match decoded {
            Decoded::Prediction(p) => {
                let row = PredictionRow::from(p);
                write(client, &mut self.predictions, failed, &row).await
            }
            Decoded::Transaction(t) => {
                let row = TransactionRow::new(t, partition, offset);
                write(client, &mut self.transactions, failed, &row).await
            }
            Decoded::Label(l) => {
                let row = LabelRow::from(l);
                write(client, &mut self.labels, failed, &row).await
            }
        }
    }

    /// Ends the three INSERTs: Ok once ClickHouse acknowledged every row, or the first failure.
    pub(crate) async fn end(self) -> Result<(), clickhouse::error::Error> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        end(self.transactions.insert).await?;
        end(self.predictions.insert).await?;
        end(self.labels.insert).await
    }
}

async fn end<R: clickhouse::Row>(
    insert: Option<Insert<R>>,
) -> Result<(), clickhouse::error::Error> {
    match insert {
        Some(i) => i.end().await,
        None => Ok(()),
    }
}

/// Writes `row` into `table`'s INSERT (opening it), unless the batch already failed.
async fn write<R>(
    client: &clickhouse::Client,
    table: &mut Table<R>,
    failed: &mut Option<clickhouse::error::Error>,
    row: &R,
) where
    R: clickhouse::RowOwned + clickhouse::RowWrite,
{
    table.rows += 1;
    if failed.is_some() {
        return;
    }
    if table.insert.is_none() {
        match client.insert::<R>(table.name).await {
            Ok(i) => table.insert = Some(i.with_timeouts(Some(SEND_TIMEOUT), None)),
            Err(e) => {
                *failed = Some(e);
                return;
            }
        }
    }
    let insert = table.insert.as_mut().expect("opened above");
    if let Err(e) = insert.write(row).await {
        tracing::warn!(table = table.name, error = %e, "streaming rows into ClickHouse failed; the batch will be inserted again from Kafka");
        table.insert = None;
        *failed = Some(e);
    }
}
