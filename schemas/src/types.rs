//! Rust mirrors of the `.avsc` files. Field names match the schemas exactly (serde maps them).

use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::OnceLock;

/// A type with an Avro schema of its own, from `avsc/`.
pub trait AvroRecord: Serialize + DeserializeOwned {
    /// The schema text, as registered in the registry.
    const SCHEMA_JSON: &'static str;
    /// The parsed schema (parsed once per process).
    fn schema() -> &'static Schema;
    /// The 64-bit Rabin fingerprint of the schema's parsing canonical form (the Avro spec's schema
    /// identity): a writer schema with the same fingerprint needs no resolution.
    fn fingerprint() -> u64;
    /// A writer for the schema, built once (it resolves named types up front).
    fn datum_writer() -> &'static GenericDatumWriter<'static>;
    /// Appends the Avro body by hand when the type has a hand-written form (`binary.rs`);
    /// `false` means use serde.
    fn write_binary(&self, _out: &mut Vec<u8>) -> bool {
        false
    }
    /// Reads an Avro body of exactly our schema by hand, returning the value and the bytes left;
    /// `None` when the type has no hand-written form.
    fn read_binary(_body: &[u8]) -> Option<Result<(Self, &[u8]), String>> {
        None
    }
}

/// The fingerprint [`AvroRecord::fingerprint`] compares.
pub(crate) fn fingerprint_of(schema: &Schema) -> u64 {
    let bytes = schema.fingerprint::<apache_avro::rabin::Rabin>().bytes;
    u64::from_le_bytes(bytes.try_into().expect("a Rabin fingerprint is 8 bytes"))
}

macro_rules! avro_record {
    ($ty:ty, $file:literal, binary) => {
        avro_record!($ty, $file, {
            fn write_binary(&self, out: &mut Vec<u8>) -> bool {
                crate::binary::Binary::write(self, &mut crate::binary::Writer(out));
                true
            }
            fn read_binary(body: &[u8]) -> Option<Result<(Self, &[u8]), String>> {
                let mut r = crate::binary::Reader::new(body);
                Some(<Self as crate::binary::Binary>::read(&mut r).map(|v| (v, r.rest())))
            }
        });
    };
    ($ty:ty, $file:literal) => {
        avro_record!($ty, $file, {});
    };
    ($ty:ty, $file:literal, { $($extra:item)* }) => {
        impl AvroRecord for $ty {
            const SCHEMA_JSON: &'static str = include_str!(concat!("../avsc/", $file));
            fn schema() -> &'static Schema {
                static SCHEMA: OnceLock<Schema> = OnceLock::new();
                SCHEMA.get_or_init(|| {
                    Schema::parse_str(Self::SCHEMA_JSON).expect(concat!(
                        "avsc/",
                        $file,
                        " is a valid Avro schema"
                    ))
                })
            }
            fn fingerprint() -> u64 {
                static FINGERPRINT: OnceLock<u64> = OnceLock::new();
                *FINGERPRINT.get_or_init(|| fingerprint_of(Self::schema()))
            }
            fn datum_writer() -> &'static GenericDatumWriter<'static> {
                static WRITER: OnceLock<GenericDatumWriter<'static>> = OnceLock::new();
                WRITER.get_or_init(|| {
                    GenericDatumWriter::builder(Self::schema())
                        .human_readable(false)
                        .build()
                        .expect(concat!("avsc/", $file, " resolves"))
                })
            }
            $($extra)*
        }
    };
}

/// PaySim's five transaction types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransactionType {
    #[serde(rename = "PAYMENT")]
    Payment,
    #[serde(rename = "TRANSFER")]
    Transfer,
    #[serde(rename = "CASH_OUT")]
    CashOut,
    #[serde(rename = "DEBIT")]
    Debit,
    #[serde(rename = "CASH_IN")]
    CashIn,
}

impl TransactionType {
    pub const ALL: [TransactionType; 5] = [
        TransactionType::Payment,
        TransactionType::Transfer,
        TransactionType::CashOut,
        TransactionType::Debit,
        TransactionType::CashIn,
    ];

    /// The name used in PaySim CSV files and in the Avro enum.
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionType::Payment => "PAYMENT",
            TransactionType::Transfer => "TRANSFER",
            TransactionType::CashOut => "CASH_OUT",
            TransactionType::Debit => "DEBIT",
            TransactionType::CashIn => "CASH_IN",
        }
    }
}

impl std::str::FromStr for TransactionType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TransactionType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!("unknown transaction type {s:?} (expected PAYMENT, TRANSFER, CASH_OUT, DEBIT or CASH_IN)")
            })
    }
}

impl std::fmt::Display for TransactionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One PaySim transaction (`avsc/transaction.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub transaction_id: String,
    /// Milliseconds since the Unix epoch (timestamp-millis).
    pub event_time: i64,
    pub step: i32,
    #[serde(rename = "type")]
    pub tx_type: TransactionType,
    pub amount: f64,
    pub name_orig: String,
    pub oldbalance_org: f64,
    pub newbalance_orig: f64,
    pub name_dest: String,
    pub oldbalance_dest: f64,
    pub newbalance_dest: f64,
    pub is_flagged_fraud: bool,
}
avro_record!(Transaction, "transaction.avsc", binary);

/// Late ground truth (`avsc/label.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub transaction_id: String,
    pub is_fraud: bool,
    pub labelled_at: i64,
    #[serde(default)]
    pub source: LabelSource,
    #[serde(default)]
    pub analyst: String,
    #[serde(default)]
    pub note: String,
}

impl Label {
    /// Ground truth from the data (the producer's replay of a chargeback).
    pub fn from_file(transaction_id: String, is_fraud: bool, labelled_at: i64) -> Self {
        Label {
            transaction_id,
            is_fraud,
            labelled_at,
            source: LabelSource::File,
            analyst: String::new(),
            note: String::new(),
        }
    }
}

/// Where a label comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LabelSource {
    /// Replayed from the data: the bank's final word (a chargeback).
    #[default]
    #[serde(rename = "FILE")]
    File,
    /// An analyst's verdict on the review page.
    #[serde(rename = "ANALYST")]
    Analyst,
}

impl LabelSource {
    pub const ALL: [LabelSource; 2] = [LabelSource::File, LabelSource::Analyst];

    pub fn as_str(self) -> &'static str {
        match self {
            LabelSource::File => "FILE",
            LabelSource::Analyst => "ANALYST",
        }
    }
}
avro_record!(Label, "label.avsc", binary);

/// One feature's contribution to an alert's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub feature: String,
    pub contribution: f64,
}

/// The scorer's verdict (`avsc/prediction.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub transaction_id: String,
    pub name_orig: String,
    #[serde(rename = "type")]
    pub tx_type: TransactionType,
    pub amount: f64,
    pub event_time: i64,
    pub scored_at: i64,
    pub score: f64,
    pub is_alert: bool,
    pub threshold: f64,
    pub model_name: String,
    pub model_version: i32,
    pub challenger_score: Option<f64>,
    pub challenger_version: Option<i32>,
    pub top_reasons: Vec<Reason>,
    /// The rules that matched (`avsc/rule.avsc`), in rule id order.
    #[serde(default)]
    pub rule_hits: Vec<RuleHit>,
    /// The rule set the verdict was decided under (0: no rules).
    #[serde(default)]
    pub rules_version: i64,
}
avro_record!(Prediction, "prediction.avsc", binary);

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuleAction {
    /// Raise an alert whatever the model says.
    #[serde(rename = "ALERT")]
    Alert,
    /// No alert (an allow-list); beats `Alert` and the model.
    #[serde(rename = "SUPPRESS")]
    Suppress,
    /// Record the hit only.
    #[serde(rename = "TAG")]
    Tag,
}

impl RuleAction {
    pub const ALL: [RuleAction; 3] = [RuleAction::Alert, RuleAction::Suppress, RuleAction::Tag];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Alert => "ALERT",
            RuleAction::Suppress => "SUPPRESS",
            RuleAction::Tag => "TAG",
        }
    }
}

impl std::str::FromStr for RuleAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuleAction::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown rule action {s:?}: use alert, suppress or tag"))
    }
}

/// One rule that matched a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHit {
    pub id: String,
    pub version: i32,
    pub action: RuleAction,
}

/// One analyst rule (`avsc/rule.avsc`), the value of the compacted `rules` topic keyed by `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub version: i32,
    pub expression: String,
    pub action: RuleAction,
    pub description: String,
    pub owner: String,
    pub enabled: bool,
    pub updated_at: i64,
}
avro_record!(Rule, "rule.avsc");

/// How `ModelRecord::model_text` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "ZSTD")]
    Zstd,
}

/// A model's role; the scorer serves the champion and shadows the challenger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelStatus {
    #[serde(rename = "CHAMPION")]
    Champion,
    #[serde(rename = "CHALLENGER")]
    Challenger,
    #[serde(rename = "RETIRED")]
    Retired,
}

/// One model version (`avsc/model_record.avsc`), the value of the compacted `models` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub model_name: String,
    pub version: i32,
    pub created_at: i64,
    pub format: String,
    pub feature_names: Vec<String>,
    pub threshold: f64,
    pub metrics: HashMap<String, f64>,
    pub training_window_start: i64,
    pub training_window_end: i64,
    pub compression: Compression,
    #[serde(with = "apache_avro::serde::bytes")]
    pub model_text: Vec<u8>,
    pub status: ModelStatus,
}
avro_record!(ModelRecord, "model_record.avsc");
