//! PaySim data, for every crate that reads or makes it: the Kaggle CSV format (a strict reader
//! that names the line and reason of every bad row, a fast writer), a simulator of PaySim-like
//! data (the Kaggle file cannot be shipped) with a realistic and a Kaggle-like profile and drift
//! scenarios, the split by time into historical and stream parts,
//! and a file's statistics next to PaySim's published figures. No Kafka here: the producer
//! replays these files into Kafka, the trainer learns from them.

pub mod format;
pub mod profile;
pub mod simulate;
pub mod split;
pub mod stats;

pub use format::{CsvError, CsvReader, PaySimRow, HEADER};
