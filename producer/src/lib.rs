//! The producer: where data enters Kafka. It replays a PaySim file (the `paysim` crate reads,
//! simulates and splits them) into Kafka as Avro `Transaction`s, with the ground-truth `Label`s
//! following after a delay, as chargebacks do; and it sends dead-lettered records back to their
//! source topic once their cause is fixed.

mod config;
pub mod publish;
pub mod replay;
