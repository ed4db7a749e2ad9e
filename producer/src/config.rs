//! What `producer publish` is asked to do: its flags (each also an environment variable), and
//! the value tests build with [`PublishConfig::new`].

use fraudstream_schemas::topics;
use std::path::PathBuf;

/// When a transaction's label is published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LabelDelay {
    /// Once the replay reaches a row `n` PaySim steps (hours) later.
    Steps(i32),
    /// `n` wall-clock seconds after the transaction was sent.
    Seconds(f64),
}

impl std::str::FromStr for LabelDelay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad =
            || format!("label delay {s:?}: use steps (\"24\" or \"24steps\") or seconds (\"30s\")");
        if let Some(n) = s.strip_suffix("steps").or_else(|| s.strip_suffix("step")) {
            n.trim().parse().map(LabelDelay::Steps).map_err(|_| bad())
        } else if let Some(n) = s.strip_suffix('s') {
            n.trim().parse().map(LabelDelay::Seconds).map_err(|_| bad())
        } else {
            s.parse().map(LabelDelay::Steps).map_err(|_| bad())
        }
    }
}

/// What to publish and how fast: `producer publish`'s own flags, and what tests set.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishConfig {
    /// The CSV to publish (the Kaggle file or one from `simulate`/`split`).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Topic for transactions.
    #[arg(long, env = "FRAUDSTREAM_TRANSACTIONS_TOPIC", default_value = topics::TRANSACTIONS)]
    pub transactions_topic: String,
    /// Topic for labels.
    #[arg(long, env = "FRAUDSTREAM_LABELS_TOPIC", default_value = topics::LABELS)]
    pub labels_topic: String,
    /// Partitions for topics this run creates (existing topics keep theirs).
    #[arg(long, env = "FRAUDSTREAM_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,
    /// Transactions per second (default: as fast as the broker takes them).
    #[arg(long, env = "FRAUDSTREAM_RATE", conflicts_with = "speedup")]
    pub rate: Option<f64>,
    /// Simulated hours (PaySim steps) per wall-clock second, instead of --rate.
    #[arg(long, env = "FRAUDSTREAM_SPEEDUP")]
    pub speedup: Option<f64>,
    /// Stop after this many transactions.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Start again at the end of the file (ids get a loop number), until --limit or Ctrl-C.
    #[arg(long = "loop", env = "FRAUDSTREAM_LOOP")]
    pub repeat: bool,
    /// When labels follow: PaySim steps ("24", "24steps") or seconds ("30s"); 0 = at once.
    #[arg(long, env = "FRAUDSTREAM_LABEL_DELAY", default_value = "24steps")]
    pub label_delay: LabelDelay,
    /// Stop at the first malformed row (default: skip it, count it, report it).
    #[arg(long, env = "FRAUDSTREAM_STRICT")]
    pub strict: bool,
    /// Transaction id prefix (ids are <prefix>-<line>, <prefix>-<loop>-<line> after the first
    /// loop); default: the file's name.
    #[arg(long, env = "FRAUDSTREAM_ID_PREFIX")]
    pub id_prefix: Option<String>,
    /// While traces are exported (--otlp-endpoint), one transaction in this many carries a
    /// `traceparent` header, so its trace runs on through the scorer and the sink.
    #[arg(long, env = "FRAUDSTREAM_TRACE_EVERY", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub trace_every: u64,
}

impl PublishConfig {
    /// The whole file once, as fast as the broker takes it, each label sent with its transaction,
    /// onto 6 partitions, ids `t-<line>`; set the other fields to change that.
    pub fn new(input: PathBuf, transactions_topic: String, labels_topic: String) -> Self {
        PublishConfig {
            input,
            transactions_topic,
            labels_topic,
            partitions: 6,
            rate: None,
            speedup: None,
            limit: None,
            repeat: false,
            label_delay: LabelDelay::Steps(0),
            strict: false,
            id_prefix: Some("t".into()),
            trace_every: 1000,
        }
    }

    /// The id prefix: the one set, else the input file's name.
    pub fn id_prefix(&self) -> String {
        self.id_prefix.clone().unwrap_or_else(|| {
            self.input
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "tx".into())
        })
    }
}
