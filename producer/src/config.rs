//! What `producer publish` is asked to do: its flags (each also an environment variable), and
//! the value tests build with [`PublishConfig::new`].

use fraudstream_schemas::topics;
use std::path::PathBuf;

/// When a transaction's label is published, after its transaction: `(earliest, latest)`.
///
/// As with card disputes: a fraud is reported anywhere in the window (a delay drawn between the
/// two, fixed by the transaction id so a replay repeats it), a legitimate transaction is
/// confirmed only when the window closes (the latest). A single value makes every delay equal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LabelDelay {
    /// Once the replay reaches a row this many PaySim steps (hours) later.
    Steps(i32, i32),
    /// This many wall-clock seconds after the transaction was sent.
    Seconds(f64, f64),
}

impl LabelDelay {
    /// Labels go out with their transactions.
    pub fn is_none(self) -> bool {
        matches!(self, LabelDelay::Steps(0, 0)) || self == LabelDelay::Seconds(0.0, 0.0)
    }

    /// The delay of one label: its fraction of the window (0..1) when a fraud, the whole window
    /// otherwise. In the unit of the variant (steps or seconds).
    pub fn of(self, is_fraud: bool, fraction: f64) -> f64 {
        let (lo, hi) = match self {
            LabelDelay::Steps(lo, hi) => (lo as f64, hi as f64),
            LabelDelay::Seconds(lo, hi) => (lo, hi),
        };
        if is_fraud {
            lo + (hi - lo) * fraction
        } else {
            hi
        }
    }
}

impl std::str::FromStr for LabelDelay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || {
            format!(
                "label delay {s:?}: use steps (\"24\", \"24steps\", \"2..24steps\") or seconds \
                 (\"30s\", \"5..30s\"), the earliest first"
            )
        };
        let (number, seconds) = if let Some(n) = s.strip_suffix("steps").or(s.strip_suffix("step"))
        {
            (n, false)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, true)
        } else {
            (s, false)
        };
        let (lo, hi) = number.split_once("..").unwrap_or((number, number));
        // "5s..30s" as well as "5..30s".
        let lo = lo
            .trim()
            .trim_end_matches(if seconds { "s" } else { "steps" });
        let delay = if seconds {
            let (lo, hi) = (
                lo.parse().map_err(|_| bad())?,
                hi.trim().parse().map_err(|_| bad())?,
            );
            LabelDelay::Seconds(lo, hi)
        } else {
            let (lo, hi) = (
                lo.parse().map_err(|_| bad())?,
                hi.trim().parse().map_err(|_| bad())?,
            );
            LabelDelay::Steps(lo, hi)
        };
        let (lo, hi) = match delay {
            LabelDelay::Steps(lo, hi) => (lo as f64, hi as f64),
            LabelDelay::Seconds(lo, hi) => (lo, hi),
        };
        if !(0.0..=hi).contains(&lo) {
            return Err(bad());
        }
        Ok(delay)
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
    /// When labels follow: PaySim steps ("24", "24steps") or seconds ("30s"); 0 = at once. A
    /// range ("2..24steps", "5..30s") is a dispute window: each fraud is reported at a delay
    /// within it (fixed by its id), each legitimate transaction confirmed when it closes.
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
            label_delay: LabelDelay::Steps(0, 0),
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
