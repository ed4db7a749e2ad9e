//! The contract between fraudstream's services: the Avro schemas (`avsc/*.avsc`), the Rust types
//! that mirror them, the topic and subject names, and a codec that writes and reads the Confluent
//! wire format (magic byte 0, 4-byte schema id, Avro body) through a schema registry.
//!
//! Every service encodes with [`Codec::encode`] and decodes with [`Codec::decode`]; schemas are
//! registered under `<topic>-value` on first use, so a fresh registry needs no set-up step.

mod binary;
mod codec;
mod types;

pub use codec::{redact_url, Codec, RegistryConfig, SchemaError};
pub use types::{
    AvroRecord, Compression, Label, LabelSource, ModelRecord, ModelStatus, Prediction, Reason,
    Rule, RuleAction, RuleHit, Transaction, TransactionType,
};

/// Topic names, in one place. Tests use their own names; services take these as defaults.
pub mod topics {
    /// PaySim transactions from the producer; key = origin account (`name_orig`).
    pub const TRANSACTIONS: &str = "transactions";
    /// Late ground truth from the producer; key = transaction id.
    pub const LABELS: &str = "labels";
    /// One committed prediction per transaction, from the scorer; key = origin account.
    pub const PREDICTIONS: &str = "predictions";
    /// The predictions at or above the threshold, with their reasons.
    pub const FRAUD_ALERTS: &str = "fraud-alerts";
    /// Compacted; key = model name + status; the scorers hot-swap from it.
    pub const MODELS: &str = "models";
    /// Analyst rules (compacted, keyed by rule id; a tombstone deletes a rule).
    pub const RULES: &str = "rules";
    /// Transactions the scorer could not decode, with the reason in headers.
    pub const TRANSACTIONS_DLQ: &str = "transactions-dlq";
    /// Predictions or labels the sink could not decode, with the reason in headers.
    pub const PREDICTIONS_DLQ: &str = "predictions-dlq";

    /// The registry subject of a topic's values (Confluent's TopicNameStrategy).
    pub fn value_subject(topic: &str) -> String {
        format!("{topic}-value")
    }
}
