//! Member configuration: command-line flags over an optional TOML file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Parser;
use serde::Deserialize;

#[derive(Debug, Parser, Default)]
#[command(name = "strata-coordinator", version, about = "Strata's Raft-replicated metadata ensemble member")]
pub struct Flags {
    /// This member's id (a positive integer, unique in the ensemble).
    #[arg(long, env = "STRATA_COORD_ID")]
    pub id: Option<u64>,
    /// Address for client traffic (the Coordinator gRPC service).
    #[arg(long, env = "STRATA_COORD_LISTEN")]
    pub listen: Option<String>,
    /// Address for peer (Raft) traffic; defaults to this member's entry in --peers.
    #[arg(long, env = "STRATA_COORD_PEER_LISTEN")]
    pub peer_listen: Option<String>,
    /// Client address published to other members and clients; defaults to the bound --listen address.
    #[arg(long, env = "STRATA_COORD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Peer addresses of the bootstrap members: 1=host:port,2=host:port,3=host:port
    #[arg(long, env = "STRATA_COORD_PEERS")]
    pub peers: Option<String>,
    #[arg(long, env = "STRATA_COORD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Start without bootstrapping; wait to be added with `strata coord member add`.
    #[arg(long)]
    pub join: bool,
    /// TOML file with any of the settings above plus tuning knobs.
    #[arg(long, env = "STRATA_COORD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Write the bound addresses as JSON here once serving (for scripts and tests).
    #[arg(long)]
    pub port_file: Option<PathBuf>,
    /// Serve Prometheus metrics on `GET /metrics` at this address.
    #[arg(long, env = "STRATA_COORD_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    listen: Option<String>,
    peer_listen: Option<String>,
    advertise: Option<String>,
    peers: Option<String>,
    data_dir: Option<PathBuf>,
    max_data_bytes: Option<usize>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    snapshot_every_entries: Option<u64>,
    write_timeout_ms: Option<u64>,
    watch_history_events: Option<usize>,
    min_session_ttl_ms: Option<u64>,
    max_session_ttl_ms: Option<u64>,
    metrics_listen: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub id: u64,
    pub listen: String,
    pub peer_listen: String,
    pub advertise: Option<String>,
    pub peers: BTreeMap<u64, String>,
    pub data_dir: PathBuf,
    pub join: bool,
    pub port_file: Option<PathBuf>,
    pub metrics_listen: Option<String>,
    pub max_data_bytes: usize,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub snapshot_every_entries: u64,
    pub write_timeout_ms: u64,
    pub watch_history_events: usize,
    pub min_session_ttl_ms: u64,
    pub max_session_ttl_ms: u64,
}

pub fn parse_peers(spec: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut peers = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').with_context(|| format!("peer {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().with_context(|| format!("peer id {id:?} is not a number"))?;
        if id == 0 {
            bail!("peer ids start at 1");
        }
        if peers.insert(id, addr.trim().to_string()).is_some() {
            bail!("peer id {id} appears twice in --peers");
        }
    }
    Ok(peers)
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
        if id == 0 {
            bail!("--id must be a positive integer");
        }
        let peers_spec = flags.peers.or(file.peers).context("--peers is required (e.g. 1=127.0.0.1:9281)")?;
        let peers = parse_peers(&peers_spec)?;
        let join = flags.join;
        if !join && !peers.contains_key(&id) {
            bail!("--peers does not name this member (id {id}); list every bootstrap member, this one included");
        }
        let peer_listen = match flags.peer_listen.or(file.peer_listen) {
            Some(addr) => addr,
            None => {
                peers.get(&id).cloned().context("--peer-listen is required when --peers does not name this member")?
            }
        };
        let listen = flags.listen.or(file.listen).context("--listen is required")?;
        let data_dir = flags.data_dir.or(file.data_dir).context("--data-dir is required")?;
        let config = Config {
            id,
            listen,
            peer_listen,
            advertise: flags.advertise.or(file.advertise),
            peers,
            data_dir,
            join,
            port_file: flags.port_file,
            metrics_listen: flags.metrics_listen.or(file.metrics_listen),
            max_data_bytes: file.max_data_bytes.unwrap_or(1024 * 1024),
            election_timeout_min_ms: file.election_timeout_min_ms.unwrap_or(150),
            election_timeout_max_ms: file.election_timeout_max_ms.unwrap_or(300),
            heartbeat_interval_ms: file.heartbeat_interval_ms.unwrap_or(50),
            snapshot_every_entries: file.snapshot_every_entries.unwrap_or(20_000),
            write_timeout_ms: file.write_timeout_ms.unwrap_or(5_000),
            watch_history_events: file.watch_history_events.unwrap_or(100_000),
            min_session_ttl_ms: file.min_session_ttl_ms.unwrap_or(500),
            max_session_ttl_ms: file.max_session_ttl_ms.unwrap_or(600_000),
        };
        if config.election_timeout_min_ms >= config.election_timeout_max_ms {
            bail!("election_timeout_min_ms must be below election_timeout_max_ms");
        }
        if config.heartbeat_interval_ms * 2 > config.election_timeout_min_ms {
            bail!("heartbeat_interval_ms must be at most half of election_timeout_min_ms");
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject() {
        let p = parse_peers("1=a:1, 2=b:2,3=c:3").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[&2], "b:2");
        assert!(parse_peers("1=a:1,1=b:2").is_err());
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("0=a:1").is_err());
        assert!(parse_peers("1").is_err());
    }
}
