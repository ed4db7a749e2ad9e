//! The scorer against the real broker and registry: three instances in one group, one SIGKILLed
//! mid-stream, a model swap, refused models and malformed records, all in one stream; the
//! per-account state carried across a restart; a challenger scored in shadow until retired; a
//! model trained in Python with its columns in another order; analyst rules changed mid-stream
//! on two scorers; records deleted before they were scored; and a trace carried through the
//! topics.
//!
//! One test binary (librdkafka and LightGBM are linked once), one file per scenario.

mod group;
mod offsets;
mod python;
mod rules;
mod shadow;
mod state;
mod support;
mod trace;
