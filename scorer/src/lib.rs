//! The scorer: consumes `transactions`, scores each with the LightGBM champion and writes one
//! `Prediction` per transaction (and alerts) in Kafka transactions. Built in issue 4.
