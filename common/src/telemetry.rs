//! Structured logs with `tracing`, and OTLP trace export when an endpoint is configured.

use crate::{CommonError, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// Logging and tracing options. Flatten into a service's clap arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log format: `text` for people, `json` for log shippers. Levels via RUST_LOG (default info).
    #[arg(long, env = "FRAUDSTREAM_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// OTLP/HTTP endpoint for traces (e.g. http://127.0.0.1:4318/v1/traces). Off when unset
    /// (and OTEL_EXPORTER_OTLP_ENDPOINT, the collector's base URL, is unset too). The service
    /// name is OTEL_SERVICE_NAME when set. Spans are info-level: RUST_LOG must let info through
    /// for them to be exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Keeps the trace exporter alive; flushes pending spans when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// The traces endpoint: the flag, or the standard OTEL_EXPORTER_OTLP_ENDPOINT base + /v1/traces.
fn traces_endpoint(args: &TelemetryArgs) -> Option<String> {
    args.otlp_endpoint.clone().or_else(|| {
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|base| !base.is_empty())
            .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
    })
}

/// The OTel resource: OTEL_SERVICE_NAME (read by the SDK) wins over our name for the service.
fn resource(service: &'static str) -> opentelemetry_sdk::Resource {
    let builder = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder.build()
    } else {
        builder.with_service_name(service).build()
    }
}

/// Installs the global subscriber for `service`. Call once, first thing in `main`.
pub fn init(service: &'static str, args: &TelemetryArgs) -> Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a file or a pipe gets plain text.
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt = if args.log_format == "json" {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .boxed()
    };
    let (otel, provider) = match &traces_endpoint(args) {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| {
                    CommonError::Telemetry(format!("OTLP exporter for {endpoint}: {e}"))
                })?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource(service))
                .build();
            crate::trace::set_exporting();
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service))
                .boxed();
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    // One filter for the whole subscriber, not one per layer: with per-layer filters, a RUST_LOG
    // with a target directive (`info,librdkafka=warn`) lost the first event of some callsites
    // (the scorer's first "partitions assigned" and "account state rebuilt" lines).
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| CommonError::Telemetry(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}
