//! Broker configuration: flags (and environment) over an optional TOML file.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Parser;
use serde::Deserialize;

#[derive(Debug, Parser, Default)]
#[command(name = "strata-broker", version, about = "Strata broker: stores and serves partitions")]
pub struct Flags {
    /// This broker's id (0 or more, unique in the cluster).
    #[arg(long, env = "STRATA_BROKER_ID")]
    pub id: Option<i32>,
    /// Address for client traffic (Broker and Admin gRPC services).
    #[arg(long, env = "STRATA_BROKER_LISTEN")]
    pub listen: Option<String>,
    /// Address clients are told to use; defaults to the bound --listen address.
    #[arg(long, env = "STRATA_BROKER_ADVERTISE")]
    pub advertise: Option<String>,
    /// Address other brokers use to reach this one (follower fetches);
    /// defaults to --advertise.
    #[arg(long, env = "STRATA_BROKER_ADVERTISE_INTERNAL")]
    pub advertise_internal: Option<String>,
    /// Coordinator ensemble client addresses, comma separated.
    #[arg(long, env = "STRATA_COORDINATORS")]
    pub coordinators: Option<String>,
    #[arg(long, env = "STRATA_BROKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Rack (failure domain) for replica placement.
    #[arg(long, env = "STRATA_BROKER_RACK")]
    pub rack: Option<String>,
    /// TOML file with any of the settings above plus tuning knobs.
    #[arg(long, env = "STRATA_BROKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Write the bound address as JSON here once serving (scripts and tests).
    #[arg(long)]
    pub port_file: Option<PathBuf>,
    /// Serve Prometheus metrics on `GET /metrics` at this address.
    #[arg(long, env = "STRATA_BROKER_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<i32>,
    listen: Option<String>,
    advertise: Option<String>,
    advertise_internal: Option<String>,
    coordinators: Option<String>,
    data_dir: Option<PathBuf>,
    rack: Option<String>,
    session_timeout_ms: Option<u64>,
    max_request_bytes: Option<usize>,
    max_open_segments: Option<usize>,
    replica_lag_time_max_ms: Option<u64>,
    replica_fetch_wait_max_ms: Option<u64>,
    leader_imbalance_check_interval_ms: Option<u64>,
    controlled_shutdown_timeout_ms: Option<u64>,
    metrics_listen: Option<String>,
    group_min_session_timeout_ms: Option<u32>,
    group_max_session_timeout_ms: Option<u32>,
    group_rebalance_delay_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub id: i32,
    pub listen: String,
    pub advertise: Option<String>,
    /// Inter-broker address; None means the advertised one.
    pub advertise_internal: Option<String>,
    pub coordinators: Vec<String>,
    pub data_dir: PathBuf,
    pub rack: String,
    pub port_file: Option<PathBuf>,
    pub metrics_listen: Option<String>,
    pub session_timeout_ms: u64,
    pub max_request_bytes: usize,
    pub max_open_segments: usize,
    /// A follower that has not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// Longest a follower's fetch waits on the leader for new data.
    pub replica_fetch_wait_max_ms: u64,
    /// How often the controller hands leadership back to preferred replicas.
    pub leader_imbalance_check_interval_ms: u64,
    /// How long SIGTERM waits for leaderships to move away before stopping.
    pub controlled_shutdown_timeout_ms: u64,
    /// Bounds of the session timeout a group member may ask for.
    pub group_min_session_timeout_ms: u32,
    pub group_max_session_timeout_ms: u32,
    /// How long a group coordinator gathers rebalance triggers (joins,
    /// leaves...) before computing one assignment for all of them.
    pub group_rebalance_delay_ms: u64,
}

impl Config {
    pub fn from_flags(flags: Flags) -> anyhow::Result<Config> {
        let file: FileConfig = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let id = flags.id.or(file.id).context("--id is required")?;
        if id < 0 {
            bail!("--id must be 0 or more");
        }
        let coordinators: Vec<String> = flags
            .coordinators
            .or(file.coordinators)
            .context("--coordinators is required (e.g. 127.0.0.1:9181,127.0.0.1:9182,127.0.0.1:9183)")?
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if coordinators.is_empty() {
            bail!("--coordinators lists no address");
        }
        let group_min_session = file.group_min_session_timeout_ms.unwrap_or(1_000);
        let group_max_session = file.group_max_session_timeout_ms.unwrap_or(300_000);
        if group_min_session > group_max_session {
            bail!(
                "group_min_session_timeout_ms ({group_min_session}) is above group_max_session_timeout_ms ({group_max_session})"
            );
        }
        Ok(Config {
            id,
            listen: flags.listen.or(file.listen).context("--listen is required")?,
            advertise: flags.advertise.or(file.advertise),
            advertise_internal: flags.advertise_internal.or(file.advertise_internal),
            coordinators,
            data_dir: flags.data_dir.or(file.data_dir).context("--data-dir is required")?,
            rack: flags.rack.or(file.rack).unwrap_or_default(),
            port_file: flags.port_file,
            metrics_listen: flags.metrics_listen.or(file.metrics_listen),
            session_timeout_ms: file.session_timeout_ms.unwrap_or(6_000),
            max_request_bytes: file.max_request_bytes.unwrap_or(64 * 1024 * 1024),
            max_open_segments: file.max_open_segments.unwrap_or(4096),
            replica_lag_time_max_ms: file.replica_lag_time_max_ms.unwrap_or(10_000).max(10),
            replica_fetch_wait_max_ms: file.replica_fetch_wait_max_ms.unwrap_or(500).max(1),
            leader_imbalance_check_interval_ms: file.leader_imbalance_check_interval_ms.unwrap_or(10_000).max(100),
            controlled_shutdown_timeout_ms: file.controlled_shutdown_timeout_ms.unwrap_or(30_000),
            group_min_session_timeout_ms: group_min_session,
            group_max_session_timeout_ms: group_max_session,
            group_rebalance_delay_ms: file.group_rebalance_delay_ms.unwrap_or(100),
        })
    }
}
