//! `/metrics` and `/health` as Prometheus and an orchestrator see them, over real HTTP.

use fraudstream_common::server::{serve, Health, Registrar};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn metrics_carry_the_service_and_process_metrics_and_health_says_why() {
    let r = Registrar::new("svc").unwrap();
    let rows = r.counter("rows_total", "Rows").unwrap();
    rows.inc_by(7);
    let health = Health::new();
    let addr = serve("127.0.0.1:0".parse().unwrap(), r.registry, health.clone())
        .await
        .unwrap();
    let metrics = get(addr, "/metrics").await;
    assert!(metrics.contains("svc_rows_total 7"), "{metrics}");
    // CPU and memory per service, for the pipeline-health dashboard.
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "{metrics}"
    );
    assert!(metrics.contains("process_cpu_seconds_total"), "{metrics}");

    let starting = get(addr, "/health").await;
    assert!(
        starting.starts_with("HTTP/1.1 503") && starting.contains("not ready: starting"),
        "{starting}"
    );
    health.set_ready("consuming");
    let ready = get(addr, "/health").await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains("ok: consuming"),
        "{ready}"
    );
}
