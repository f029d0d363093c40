//! Reading a server's Prometheus endpoint in tests.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of `GET /metrics` (plain HTTP/1.0, so the server closes the
/// connection after answering).
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("metrics at {addr}"))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: strata\r\n\r\n").await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP header end")?;
    anyhow::ensure!(head.starts_with("HTTP/1.") && head.contains(" 200 "), "metrics answer: {head}");
    Ok(body.to_string())
}

/// The sum of every sample of `name` whose labels contain all of `labels`
/// (`key="value"` strings); None when no sample matches.
pub fn sample_sum(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (metric, series_labels) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name || !labels.iter().all(|l| series_labels.split(',').any(|s| s == *l)) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}
