use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use fraudstream_common::kafka::KafkaArgs;
use fraudstream_common::service::Service;
use fraudstream_common::telemetry::TelemetryArgs;
use fraudstream_schemas::topics;
use indicatif::{ProgressBar, ProgressStyle};
use paysim::profile::{Drift, Profile};
use paysim::simulate::SimConfig;
use paysim::{simulate, split, stats};
use producer::publish::{publish, PublishConfig};
use producer::replay::{self, Filter, ReplayConfig};
use std::io::Write;
use std::path::{Path, PathBuf};

/// PaySim data into fraudstream: simulate it, inspect it, split it by time, replay it into Kafka.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate PaySim-like transactions as a CSV with the Kaggle header (deterministic per seed).
    Simulate {
        /// Number of rows (the Kaggle file has 6,362,620).
        #[arg(long, env = "FRAUDSTREAM_ROWS", default_value_t = 6_362_620)]
        rows: u64,
        /// Random seed; the same seed gives the same file.
        #[arg(long, env = "FRAUDSTREAM_SEED", default_value_t = 42)]
        seed: u64,
        /// Output CSV file.
        #[arg(long, short, default_value = "paysim.csv")]
        out: PathBuf,
        /// Also print the file's statistics (as `producer stats`).
        #[arg(long)]
        stats: bool,
        /// `realistic`: PaySim's shape with fraud a model can miss (partial drains, reused mules,
        /// delayed cash-outs, normal customers who empty accounts, unrecorded balances, 8% of
        /// takeovers never reported). `kaggle`: fraud exactly as PaySim writes it (perfectly
        /// separable).
        #[arg(long, env = "FRAUDSTREAM_PROFILE", default_value = "realistic",
              value_parser = PossibleValuesParser::new(Profile::NAMES).map(|s| s.parse::<Profile>().unwrap()))]
        profile: Profile,
        /// A new fraud pattern from a step on, e.g. `card-testing@400` (bursts of tiny transfers
        /// testing a stolen account before it is drained; twice the takeovers). Repeatable.
        #[arg(long, env = "FRAUDSTREAM_DRIFT", value_delimiter = ',')]
        drift: Vec<Drift>,
    },
    /// Print a PaySim file's type mix, fraud rate per type and amount quantiles next to PaySim's.
    Stats {
        /// The CSV to inspect.
        input: PathBuf,
    },
    /// Split a PaySim file by time (step) into historical.csv and stream.csv.
    Split {
        /// The CSV to split.
        #[arg(long, short)]
        input: PathBuf,
        /// Share of rows (whole steps) that go to the historical part.
        #[arg(long, default_value_t = 0.9)]
        ratio: f64,
        /// Directory for historical.csv and stream.csv.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
    },
    /// Replay a PaySim CSV into Kafka: transactions now, labels after --label-delay.
    Publish(Box<PublishArgs>),
    /// Send dead-lettered records back to the topic they came from, once the cause is fixed
    /// (exactly once per record, remembered in a ledger topic; try --dry-run first).
    ReplayDlq(Box<ReplayArgs>),
}

/// Which dead letters go back, and where the ledger of replayed records is kept.
#[derive(clap::Args)]
#[command(after_help = "\
Each record goes back to the topic and partition named by its source.* headers, with its key and
a replayed.from header. A ledger topic remembers every source record replayed, in
the same Kafka transaction as the record itself: running the command again, or on the other
dead-letter topic (a bad transaction is dead-lettered by the scorer and by the sink), never sends
a record twice. Everything that consumes the source topic sees the record again: the scorer
scores it, the sink lands it; ClickHouse keeps one row per transaction id.

Examples:
  producer replay-dlq --dlq-topic transactions-dlq --dry-run | head
  producer replay-dlq --dlq-topic transactions-dlq --error 'No content with ID' --since 2h")]
struct ReplayArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The dead-letter topic to replay: the scorer's (transactions-dlq) or the sink's
    /// (predictions-dlq).
    #[arg(long, default_value = topics::TRANSACTIONS_DLQ)]
    dlq_topic: String,
    /// Only dead letters whose error header contains this text.
    #[arg(long)]
    error: Option<String>,
    /// Only dead letters written at or after this time: RFC 3339 (2026-11-29T10:00:00Z) or an
    /// age (90m, 2h, 1d).
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Only dead letters written before this time (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
    /// Only this partition of the dead-letter topic.
    #[arg(long)]
    partition: Option<i32>,
    /// Only offsets from this one (inclusive) of the dead-letter topic.
    #[arg(long)]
    from_offset: Option<i64>,
    /// Only offsets up to this one (inclusive) of the dead-letter topic.
    #[arg(long)]
    to_offset: Option<i64>,
    /// Replay at most this many records.
    #[arg(long)]
    limit: Option<u64>,
    /// Print what would be sent (one line per record) and the summary; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// The compacted topic that remembers the replayed records.
    #[arg(long, env = "FRAUDSTREAM_DLQ_LEDGER_TOPIC", default_value = replay::DEFAULT_LEDGER)]
    ledger_topic: String,
    /// Records per Kafka transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
}

/// A time as ms since the epoch: RFC 3339, or an age before now ("2h").
fn parse_time(s: &str) -> Result<i64, String> {
    let now = std::time::SystemTime::now();
    let t = match humantime::parse_duration(s) {
        Ok(age) => now - age,
        Err(_) => humantime::parse_rfc3339_weak(s).map_err(|e| {
            format!("{e}: give a time (2026-11-29T10:00:00Z) or an age (90m, 2h, 1d)")
        })?,
    };
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

async fn replay_dlq(args: ReplayArgs) -> Result<()> {
    fraudstream_common::check_connections(Some(&args.kafka), None).await?;
    let cfg = ReplayConfig {
        kafka: args.kafka,
        dlq_topic: args.dlq_topic,
        ledger_topic: args.ledger_topic,
        filter: Filter {
            error: args.error,
            since_ms: args.since,
            until_ms: args.until,
            partition: args.partition,
            from_offset: args.from_offset,
            to_offset: args.to_offset,
            limit: args.limit,
        },
        dry_run: args.dry_run,
        batch: args.batch as usize,
    };
    let pb = bar(None, "dead letters read");
    let (pb_len, pb_pos) = (pb.clone(), pb.clone());
    let out = std::io::stdout();
    let report = replay::replay(
        &cfg,
        |n| {
            pb_len.set_length(n);
            pb_len.set_style(ProgressStyle::with_template(BAR_TEMPLATE).unwrap());
        },
        |n| pb_pos.set_position(n),
        |line| pb.suspend(|| writeln!(out.lock(), "{line}").unwrap_or(())),
    )
    .await
    .with_context(|| format!("replaying {}", cfg.dlq_topic))?;
    pb.finish_and_clear();
    print!("{}", report.summary(cfg.dry_run));
    Ok(())
}

#[derive(clap::Args)]
struct PublishArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    cfg: PublishConfig,
    /// Write malformed rows with line and reason to this CSV.
    #[arg(long, env = "FRAUDSTREAM_REJECTS")]
    rejects: Option<PathBuf>,
    /// Serve /metrics and /health here while publishing (e.g. 127.0.0.1:9101).
    #[arg(long, env = "FRAUDSTREAM_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

const BAR_TEMPLATE: &str =
    "{spinner} [{elapsed_precise}] {bar:40} {human_pos}/{human_len} {msg} ({per_sec}, eta {eta})";

fn bar(len: Option<u64>, what: &str) -> ProgressBar {
    let pb = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = if len.is_some() {
        BAR_TEMPLATE
    } else {
        "{spinner} [{elapsed_precise}] {human_pos} {msg} ({per_sec})"
    };
    pb.set_style(ProgressStyle::with_template(template).unwrap());
    pb.set_message(what.to_string());
    pb
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let service = Service::start("producer", &cli.telemetry)?;
    match cli.command {
        Command::Simulate {
            rows,
            seed,
            out,
            stats,
            profile,
            drift,
        } => {
            let cfg = SimConfig {
                rows,
                seed,
                profile,
                drifts: drift,
            };
            simulate_file(&cfg, &out, stats)
        }
        Command::Stats { input } => {
            print!("{}", stats::FileStats::of_file(&input)?.report());
            Ok(())
        }
        Command::Split {
            input,
            ratio,
            out_dir,
        } => split_file(&input, ratio, &out_dir),
        Command::ReplayDlq(args) => replay_dlq(*args).await,
        Command::Publish(args) => publish_file(&service, *args).await,
    }
}

/// `producer simulate`.
fn simulate_file(cfg: &SimConfig, out: &Path, stats: bool) -> Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let pb = bar(Some(cfg.rows), "rows");
    let start = std::time::Instant::now();
    let summary = simulate::simulate_with(cfg, &mut w, |n| pb.set_position(n))
        .with_context(|| format!("writing {}", out.display()))?;
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let drifts: Vec<String> = cfg.drifts.iter().map(|d| d.to_string()).collect();
    println!(
        "wrote {} rows to {} in {:.1}s ({:.0} rows/s): {} fraud, {} flagged, {} unreported fraud, {} drift-pattern fraud; profile {}{}, seed {}",
        summary.rows,
        out.display(),
        secs,
        summary.rows as f64 / secs,
        summary.fraud_rows,
        summary.flagged_rows,
        summary.unreported_rows,
        summary.drift_rows,
        cfg.profile,
        if drifts.is_empty() { String::new() } else { format!(", drift {}", drifts.join(",")) },
        cfg.seed
    );
    if stats {
        print!("{}", stats::FileStats::of_file(out)?.report());
    }
    Ok(())
}

/// `producer split`.
fn split_file(input: &Path, ratio: f64, out_dir: &Path) -> Result<()> {
    if !(0.0..=1.0).contains(&ratio) {
        bail!("--ratio must be between 0 and 1 (got {ratio})");
    }
    std::fs::create_dir_all(out_dir)?;
    let (h, s) = (out_dir.join("historical.csv"), out_dir.join("stream.csv"));
    let r = split::split(input, ratio, &h, &s)?;
    println!(
        "cut after step {}: {} ({} rows, {} fraud) | {} ({} rows, {} fraud){}",
        r.cut_step,
        h.display(),
        r.historical_rows,
        r.historical_fraud,
        s.display(),
        r.stream_rows,
        r.stream_fraud,
        if r.bad_rows > 0 {
            format!(" | {} bad rows left out", r.bad_rows)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `producer publish`.
async fn publish_file(service: &Service, args: PublishArgs) -> Result<()> {
    let PublishArgs {
        kafka,
        cfg,
        rejects,
        metrics_addr,
    } = args;
    fraudstream_common::check_connections(Some(&kafka), None).await?;
    let metrics = PublishMetrics::new()?;
    if let Some(addr) = metrics_addr {
        service.health.set_ready("publishing");
        service.serve(addr, metrics.registry.clone()).await?;
    }
    let stop = service.stop_on_signals("flushing what was sent").flag();
    let pb = bar(cfg.limit, "transactions");
    let pb2 = pb.clone();
    let s = publish(&kafka, cfg, stop, move |s| {
        metrics.update(s);
        pb2.set_position(s.sent);
        pb2.set_message(format!("sent, {} acked, {} labels", s.acked, s.labels_sent));
    })
    .await?;
    pb.finish_and_clear();
    report_publish(&s, rejects.as_deref())
}

/// What `publish` prints at the end; an error when Kafka did not acknowledge everything.
fn report_publish(s: &producer::publish::PublishSummary, rejects: Option<&Path>) -> Result<()> {
    println!(
        "published {} transactions in {:.1}s ({:.0} tx/s): {} acknowledged, {} failed; labels: {} sent, {} acknowledged, {} failed{}",
        s.sent,
        s.elapsed.as_secs_f64(),
        s.rate(),
        s.acked,
        s.failed,
        s.labels_sent,
        s.labels_acked,
        s.labels_failed,
        if s.interrupted { " (interrupted)" } else { "" }
    );
    if s.labels_early > 0 {
        println!(
            "{} labels were sent before their delay because of the interrupt",
            s.labels_early
        );
    }
    if let Some(e) = &s.first_delivery_error {
        println!("first delivery error: {e}");
    }
    if s.bad_row_count > 0 {
        println!("{} malformed rows skipped:", s.bad_row_count);
        for b in s.bad_rows.iter().take(10) {
            println!("  line {}: {}", b.line, b.reason);
        }
        if let Some(path) = rejects {
            let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
            writeln!(w, "line,reason,row")?;
            for b in &s.bad_rows {
                writeln!(
                    w,
                    "{},\"{}\",\"{}\"",
                    b.line,
                    b.reason.replace('"', "'"),
                    b.text.replace('"', "'")
                )?;
            }
            println!(
                "  (first {} written to {})",
                s.bad_rows.len(),
                path.display()
            );
        }
    }
    if s.failed > 0 || s.labels_failed > 0 {
        bail!(
            "{} transactions and {} labels were not acknowledged by Kafka",
            s.failed,
            s.labels_failed
        );
    }
    Ok(())
}

/// The publisher's counters, as Prometheus sees them.
struct PublishMetrics {
    registry: prometheus::Registry,
    counters: Vec<(prometheus::IntCounter, Getter)>,
}

/// Reads one count from the running summary.
type Getter = fn(&producer::publish::PublishSummary) -> u64;

impl PublishMetrics {
    fn new() -> Result<Self> {
        let registry = prometheus::Registry::new();
        let defs: [(&str, &str, Getter); 6] = [
            (
                "producer_transactions_sent_total",
                "Transactions handed to Kafka",
                |s| s.sent,
            ),
            (
                "producer_transactions_acked_total",
                "Transactions acknowledged by Kafka",
                |s| s.acked,
            ),
            (
                "producer_transactions_failed_total",
                "Transactions Kafka did not acknowledge",
                |s| s.failed,
            ),
            (
                "producer_labels_sent_total",
                "Labels handed to Kafka",
                |s| s.labels_sent,
            ),
            (
                "producer_labels_acked_total",
                "Labels acknowledged by Kafka",
                |s| s.labels_acked,
            ),
            (
                "producer_bad_rows_total",
                "Malformed CSV rows skipped",
                |s| s.bad_row_count,
            ),
        ];
        let mut counters = Vec::new();
        for (name, help, get) in defs {
            let c = prometheus::IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            counters.push((c, get));
        }
        Ok(PublishMetrics { registry, counters })
    }

    /// The summary's counts only grow: each counter catches up with its count.
    fn update(&self, s: &producer::publish::PublishSummary) {
        for (c, get) in &self.counters {
            c.inc_by(get(s).saturating_sub(c.get()));
        }
    }
}
