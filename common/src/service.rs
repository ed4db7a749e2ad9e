//! The skeleton every fraudstream binary starts from, so the four start and stop the same way:
//! logs and traces first ([`Service::start`]), then for the long-running work the `/metrics` and
//! `/health` server ([`Service::serve`]) and the stop signal ([`Service::stop_on_signals`]).
//! Short commands (`trainer list`, `producer simulate`) take only the first step: a Ctrl-C there
//! should end the process at once, not ask it to finish cleanly.

use crate::server::{self, Health};
use crate::stop::Stop;
use crate::telemetry::{self, TelemetryArgs, TelemetryGuard};
use crate::Result;
use prometheus::Registry;
use std::net::SocketAddr;
use std::sync::Arc;

/// A running service: its telemetry (flushed when this is dropped) and its health.
pub struct Service {
    pub health: Arc<Health>,
    _telemetry: TelemetryGuard,
}

impl Service {
    /// Installs logging and (when configured) OTLP tracing for `name`. Call first in `main`.
    pub fn start(name: &'static str, telemetry: &TelemetryArgs) -> Result<Self> {
        Ok(Service {
            health: Health::new(),
            _telemetry: telemetry::init(name, telemetry)?,
        })
    }

    /// Serves `/metrics` (from `registry`, plus the process's CPU and memory) and `/health` on
    /// `addr`; returns the bound address (port 0 picks a free one).
    pub async fn serve(&self, addr: SocketAddr, registry: Registry) -> Result<SocketAddr> {
        server::serve(addr, registry, self.health.clone()).await
    }

    /// The stop the first SIGINT/SIGTERM sets (logging `finishing`, what the service does before
    /// it exits); a second signal exits with 130.
    pub fn stop_on_signals(&self, finishing: &'static str) -> Stop {
        Stop::on_signals(finishing)
    }
}
