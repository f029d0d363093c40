//! `strata health ADDR [--service NAME]`: asks a coordinator's or broker's
//! standard gRPC health service (`grpc.health.v1.Health`, on the client
//! port). Exit code 0 when the answer is SERVING, 1 for any other answer or
//! no answer. Made for container health checks: the image has no shell and
//! no curl, but it has this binary.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Client address of a coordinator or broker (HOST:PORT).
    pub addr: String,
    /// Service to ask about; the default (empty) is the whole server. Others:
    /// strata.coord.v1.Coordinator, strata.broker.v1.Broker, strata.broker.v1.Admin.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let addr = args.addr.trim().trim_start_matches("http://");
    let what = if args.service.is_empty() { "server".to_string() } else { format!("service {}", args.service) };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let status = tokio::time::timeout(timeout, check(addr, &args.service))
        .await
        .with_context(|| format!("{addr}: no health answer within {timeout:?}"))??;
    let name = status.as_str_name();
    if args.json {
        println!("{}", json!({ "addr": addr, "service": args.service, "status": name }));
    }
    if status != ServingStatus::Serving {
        bail!("{addr}: {what} is {name}");
    }
    if !args.json {
        println!("{addr}: {what} is SERVING");
    }
    Ok(())
}

async fn check(addr: &str, service: &str) -> anyhow::Result<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("bad address {addr}"))?
        .connect()
        .await
        .with_context(|| format!("{addr}: cannot connect"))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest { service: service.to_string() })
        .await
        .map_err(|s| anyhow::anyhow!("{addr}: health check failed: {} ({:?})", s.message(), s.code()))?;
    Ok(ServingStatus::try_from(answer.into_inner().status).unwrap_or(ServingStatus::Unknown))
}
