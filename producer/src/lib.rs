//! The producer: where PaySim data enters fraudstream. It simulates PaySim-like data (the Kaggle
//! file cannot be shipped), reads the real file when a user has it, splits it by time into
//! historical (training) and stream parts, and replays the stream into Kafka as Avro
//! `Transaction`s, with the ground-truth `Label`s following after a delay, as chargebacks do.

pub mod paysim;
pub mod publish;
pub mod replay;
pub mod simulate;
pub mod split;
pub mod stats;
