//! A batch's rows on their way to their destination. For ClickHouse they are streamed: each table
//! has one open INSERT that receives rows as they are decoded and sends them in 256 KiB chunks,
//! so the sink holds a few chunks per table, not the batch (whose 200k rows took ~100 MiB as
//! structs). The INSERT ends when the batch is handed over; only then does ClickHouse answer.
//!
//! The INSERTs run on a task of their own, fed chunks of decoded records over a short channel:
//! building the rows, RowBinary and LZ4 were a third of the reading thread's CPU, and the reading
//! thread (poll, decode) is what bounds the sink. A full channel holds the reader back, as a
//! slow INSERT did before.
//!
//! A failed stream loses nothing: the batch's offsets are not committed, and the writer inserts
//! the batch again from its records in Kafka ([`crate::writer`]). BigQuery takes predictions only,
//! gathered in memory as before.

use crate::rows::{LabelRow, PredictionRow, TransactionRow};
use clickhouse::insert::Insert;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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
            Rows::ClickHouse(s) => s.counts,
            #[cfg(feature = "bigquery")]
            Rows::BigQuery(v) => [0, v.len(), 0],
        }
    }
}

/// Records handed to the INSERT task at a time: one channel send per chunk, not per row.
const CHUNK: usize = 1024;
/// Chunks waiting for the INSERT task: enough to ride out its pauses, little memory (~1 MiB).
const QUEUED_CHUNKS: usize = 4;

/// What the reading side sends the INSERT task.
enum Msg {
    Records(Vec<(Decoded, i32, i64)>),
    /// Every record is sent: end the INSERTs. A channel closed without it (a batch dropped)
    /// drops them unfinished instead.
    End,
}

/// The task that writes a batch's INSERTs: their result.
type InsertTask = JoinHandle<Result<(), clickhouse::error::Error>>;

/// The reading side of one batch's INSERTs: the task is started at the first record.
pub(crate) struct Streams {
    client: clickhouse::Client,
    chunk: Vec<(Decoded, i32, i64)>,
    task: Option<(mpsc::Sender<Msg>, InsertTask)>,
    /// Rows per table (transactions, predictions, labels), counted as they are pushed.
    counts: [usize; 3],
}

impl Streams {
    pub(crate) fn new(client: clickhouse::Client) -> Self {
        Streams {
            client,
            chunk: Vec::new(),
            task: None,
            counts: [0; 3],
        }
    }

    pub(crate) async fn push(&mut self, decoded: Decoded, partition: i32, offset: i64) {
        let table = match decoded {
            Decoded::Transaction(_) => 0,
            Decoded::Prediction(_) => 1,
            Decoded::Label(_) => 2,
        };
        self.counts[table] += 1;
        if self.chunk.capacity() == 0 {
            self.chunk.reserve_exact(CHUNK);
        }
        self.chunk.push((decoded, partition, offset));
        if self.chunk.len() >= CHUNK {
            self.send_chunk().await;
        }
    }

    async fn send_chunk(&mut self) {
        let chunk = std::mem::take(&mut self.chunk);
        let client = &self.client;
        let (tx, _) = self.task.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
            (tx, tokio::spawn(insert_task(client.clone(), rx)))
        });
        // A task that ended early failed: its error comes from `end`.
        let _ = tx.send(Msg::Records(chunk)).await;
    }

    /// Ends the three INSERTs: Ok once ClickHouse acknowledged every row, or the first failure.
    pub(crate) async fn end(mut self) -> Result<(), clickhouse::error::Error> {
        if !self.chunk.is_empty() {
            self.send_chunk().await;
        }
        let Some((tx, task)) = self.task.take() else {
            return Ok(());
        };
        let _ = tx.send(Msg::End).await;
        drop(tx);
        match task.await {
            Ok(result) => result,
            Err(e) => Err(clickhouse::error::Error::Custom(format!(
                "the INSERT task failed: {e}"
            ))),
        }
    }
}

/// One open INSERT per table, opened at the table's first row.
struct Tables {
    client: clickhouse::Client,
    transactions: Table<TransactionRow>,
    predictions: Table<PredictionRow>,
    labels: Table<LabelRow>,
    /// The first failure; the rows after it are dropped (the writer inserts the batch again
    /// from Kafka).
    failed: Option<clickhouse::error::Error>,
}

struct Table<R: clickhouse::Row> {
    name: &'static str,
    insert: Option<Insert<R>>,
}

impl<R: clickhouse::Row> Table<R> {
    fn new(name: &'static str) -> Self {
        Table { name, insert: None }
    }
}

/// A chunk that ClickHouse does not take within this long fails the stream (the batch is then
/// written again from Kafka), so a hung server cannot stall the reading loop for long.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes the records it is sent into the three INSERTs, and ends them at [`Msg::End`].
async fn insert_task(
    client: clickhouse::Client,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<(), clickhouse::error::Error> {
    let mut tables = Tables {
        client,
        transactions: Table::new("transactions"),
        predictions: Table::new("predictions"),
        labels: Table::new("labels"),
        failed: None,
    };
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Records(chunk) => {
                for (decoded, partition, offset) in chunk {
                    tables.push(decoded, partition, offset).await;
                }
            }
            Msg::End => return tables.end().await,
        }
    }
    // The batch was dropped before its end: the INSERTs are dropped unfinished. ClickHouse
    // keeps the rows it had already read (it takes the aborted body for its end); whoever owns
    // the batch's records writes them again, and the tables keep one row per transaction id.
    Err(clickhouse::error::Error::Custom(
        "the batch was dropped before its end".into(),
    ))
}

impl Tables {
    async fn push(&mut self, decoded: Decoded, partition: i32, offset: i64) {
        if self.failed.is_some() {
            return;
        }
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

    async fn end(self) -> Result<(), clickhouse::error::Error> {
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

/// Writes `row` into `table`'s INSERT (opening it).
async fn write<R>(
    client: &clickhouse::Client,
    table: &mut Table<R>,
    failed: &mut Option<clickhouse::error::Error>,
    row: &R,
) where
    R: clickhouse::RowOwned + clickhouse::RowWrite,
{
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

#[cfg(test)]
mod tests {
    //! Against the local ClickHouse (`make services`), as every sink test.
    use super::*;
    use fraudstream_common::testing::{local_clickhouse, unique_name};
    use fraudstream_schemas::{Prediction, TransactionType};

    fn prediction(i: usize) -> Decoded {
        Decoded::Prediction(Prediction {
            transaction_id: format!("tx-{i:06}"),
            name_orig: format!("C{i}"),
            tx_type: TransactionType::ALL[i % 5],
            amount: i as f64,
            event_time: 1_700_000_000_000 + i as i64,
            scored_at: 1_700_000_000_010 + i as i64,
            score: 0.5,
            is_alert: false,
            threshold: 0.9,
            model_name: "paysim".into(),
            model_version: 1,
            challenger_score: None,
            challenger_version: None,
            top_reasons: Vec::new(),
            rule_hits: Vec::new(),
            rules_version: 0,
        })
    }

    async fn rows_in(client: &clickhouse::Client, modifier: &str) -> u64 {
        client
            .query(&format!("SELECT count() FROM predictions {modifier}"))
            .fetch_one()
            .await
            .unwrap()
    }

    /// Rows go through the INSERT task in chunks and land when the batch ends. A batch dropped
    /// before its end may land the chunks it streamed (ClickHouse takes an aborted body for its
    /// end, as it did before the task): written again, its records stay one row per id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_lands_whole_at_its_end_and_a_dropped_one_written_again_once() {
        let ch = local_clickhouse(&unique_name("stream_task"));
        ch.migrate().await.unwrap();
        let client = ch.client();
        let n = CHUNK * 3 + 17;
        let mut kept = Streams::new(client.clone());
        let mut dropped = Streams::new(client.clone());
        for i in 0..n {
            kept.push(prediction(i), 0, i as i64).await;
            dropped.push(prediction(n + i), 0, i as i64).await;
        }
        assert_eq!(kept.counts, [0, n, 0]);
        assert_eq!(
            rows_in(&client, "").await,
            0,
            "nothing lands before the end"
        );
        drop(dropped);
        kept.end().await.unwrap();
        let landed = rows_in(&client, "").await;
        assert!(
            (n as u64..=(n + 3 * CHUNK) as u64).contains(&landed),
            "the ended batch whole, at most the streamed chunks of the dropped one: {landed}"
        );
        let mut again = Streams::new(client.clone());
        for i in n..2 * n {
            again.push(prediction(i), 0, i as i64).await;
        }
        again.end().await.unwrap();
        assert_eq!(rows_in(&client, "FINAL").await, 2 * n as u64);
        client
            .query(&format!("DROP DATABASE {}", ch.database))
            .execute()
            .await
            .unwrap();
    }
}
