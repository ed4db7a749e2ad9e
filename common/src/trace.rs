//! A trace that crosses topics: the W3C `traceparent` travels in a Kafka header, so one sampled
//! transaction shows as one trace from the producer through the scorer to the sink. Only one
//! transaction in `--trace-every` carries it, and only while traces are exported: a header and a
//! span per record would cost more than the work they describe at hundreds of thousands a second.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header's name, as the W3C Trace Context spec has it.
pub const TRACEPARENT: &str = "traceparent";

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Set by `telemetry::init` when an OTLP exporter is installed.
pub(crate) fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// True when spans are exported: without an exporter no record gets a header.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The `traceparent` of `span` (none when the span is not sampled or not exported).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the span that wrote `traceparent` (in another process).
pub fn follow(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// The `traceparent` header of a Kafka record, if it has one.
pub fn from_headers(headers: Option<&rdkafka::message::BorrowedHeaders>) -> Option<String> {
    let headers = headers?;
    headers
        .iter()
        .find(|h| h.key == TRACEPARENT)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Kafka headers carrying `traceparent`.
pub fn headers(traceparent: &str) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: TRACEPARENT,
        value: Some(traceparent),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_followed_into_a_child_span_of_the_same_trace() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let upstream = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let span = tracing::info_span!("child");
            follow(&span, upstream);
            let own = traceparent(&span).expect("a sampled span has a traceparent");
            let parts: Vec<&str> = own.split('-').collect();
            assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
            assert_ne!(parts[2], "00f067aa0ba902b7", "its own span id");
        });
    }
}
