//! The Prometheus endpoint of a server process: `GET /metrics` in the text
//! exposition format. Counters and histograms are recorded where things
//! happen (the `metrics` macros); gauges that mirror live state are set by
//! the server's `refresh` callback just before each scrape, so they are
//! never stale and cost nothing between scrapes.

use std::net::SocketAddr;
use std::sync::Arc;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Latency buckets (seconds) for request and apply histograms: 100 µs to
/// 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot install the metrics recorder: {0}")]
    Install(String),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

/// Installs the process-wide recorder (once per process) and binds the
/// endpoint. Returns the bound address (the port may be 0 in `addr`).
pub async fn start(
    addr: &str,
    refresh: Arc<dyn Fn() + Send + Sync>,
    stop: watch::Receiver<bool>,
) -> Result<SocketAddr, MetricsError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .map_err(|e| MetricsError::Install(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError::Install(e.to_string()))?;
    let listener =
        TcpListener::bind(addr).await.map_err(|source| MetricsError::Listen { addr: addr.to_string(), source })?;
    let bound = listener.local_addr().map_err(|source| MetricsError::Listen { addr: addr.to_string(), source })?;
    tokio::spawn(serve(listener, handle, refresh, stop));
    Ok(bound)
}

async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    refresh: Arc<dyn Fn() + Send + Sync>,
    mut stop: watch::Receiver<bool>,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (handle, refresh) = (handle.clone(), refresh.clone());
            async move {
                refresh();
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
            }
        }),
    );
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::warn!(error = %e, "metrics endpoint stopped");
    }
}
