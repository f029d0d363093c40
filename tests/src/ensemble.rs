//! A coordinator ensemble of real `strata-coordinator` processes.
//!
//! Every member-to-member link (i → j) and every client link (→ i) goes
//! through its own `Proxy`, so a test can cut one member off completely
//! while the others keep talking. Members listen on port 0; the harness reads
//! the bound ports from each member's port file and points the proxies there.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use strata_coord_client::{CoordClient, CoordConfig};

use crate::process::{ChildProcess, binary};
use crate::proxy::Proxy;
use crate::wait::{eventually, wait_until};

pub struct Member {
    pub id: u64,
    pub data_dir: PathBuf,
    pub process: Option<ChildProcess>,
    /// Stable address clients use (a proxy in front of the member).
    pub client_proxy: Proxy,
    pub client_bound: Option<SocketAddr>,
    pub peer_bound: Option<SocketAddr>,
    /// The member's Prometheus endpoint.
    pub metrics_bound: Option<SocketAddr>,
    restarts: u32,
}

pub struct Ensemble {
    pub members: BTreeMap<u64, Member>,
    /// Proxy carrying traffic from member `.0` to member `.1`.
    pub links: BTreeMap<(u64, u64), Proxy>,
    extra_config: String,
    // Last: dropped after the members, so their logs can still be printed.
    pub dir: tempfile::TempDir,
}

impl Ensemble {
    pub async fn start(n: u64) -> anyhow::Result<Ensemble> {
        Self::start_with_config(n, "").await
    }

    /// Starts `n` members; `extra_config` is appended to each member's TOML
    /// config file (tuning knobs).
    pub async fn start_with_config(n: u64, extra_config: &str) -> anyhow::Result<Ensemble> {
        Self::start_with_options(n, extra_config, std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// As `start_with_config`, with the client proxies (the addresses the
    /// members advertise) listening on `client_ip`.
    pub async fn start_with_options(
        n: u64,
        extra_config: &str,
        client_ip: std::net::IpAddr,
    ) -> anyhow::Result<Ensemble> {
        let dir = tempfile::Builder::new().prefix("strata-ensemble-").tempdir()?;
        let mut links = BTreeMap::new();
        for i in 1..=n {
            for j in 1..=n {
                if i != j {
                    links.insert((i, j), Proxy::start().await?);
                }
            }
        }
        let mut members = BTreeMap::new();
        for id in 1..=n {
            members.insert(
                id,
                Member {
                    id,
                    data_dir: dir.path().join(format!("coord-{id}")),
                    process: None,
                    client_proxy: Proxy::start_on(client_ip).await?,
                    client_bound: None,
                    peer_bound: None,
                    metrics_bound: None,
                    restarts: 0,
                },
            );
        }
        let mut ensemble = Ensemble { members, links, extra_config: extra_config.to_string(), dir };
        for id in 1..=n {
            ensemble.spawn(id, false)?;
        }
        for id in 1..=n {
            ensemble.await_ports(id).await?;
        }
        ensemble.wait_for_leader(Duration::from_secs(20)).await?;
        Ok(ensemble)
    }

    fn peers_arg(&self, id: u64) -> String {
        self.members
            .keys()
            .map(|&j| {
                let addr = if j == id {
                    // Only used for display in this member's initial
                    // membership entry; its real peer port is chosen at bind.
                    let other = self.members.keys().find(|&&k| k != id).copied().unwrap_or(id);
                    self.links.get(&(other, id)).map(|p| p.addr().to_string()).unwrap_or_default()
                } else {
                    self.links[&(id, j)].addr().to_string()
                };
                format!("{j}={addr}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, id: u64, join: bool) -> anyhow::Result<()> {
        let peers = self.peers_arg(id);
        let config_path = self.dir.path().join(format!("coord-{id}.toml"));
        std::fs::write(&config_path, &self.extra_config)?;
        let m = self.members.get_mut(&id).context("no such member")?;
        let port_file = self.dir.path().join(format!("coord-{id}.port"));
        let _ = std::fs::remove_file(&port_file);
        let mut args = vec![
            "--id".to_string(),
            id.to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--peer-listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--advertise".into(),
            m.client_proxy.addr().to_string(),
            "--peers".into(),
            peers,
            "--data-dir".into(),
            m.data_dir.display().to_string(),
            "--config".into(),
            config_path.display().to_string(),
            "--port-file".into(),
            port_file.display().to_string(),
        ];
        if join {
            args.push("--join".into());
        }
        m.restarts += 1;
        let log = self.dir.path().join(format!("coord-{id}.{}.log", m.restarts));
        m.process =
            Some(ChildProcess::spawn(&format!("coordinator-{id}"), &binary("strata-coordinator"), &args, &log)?);
        Ok(())
    }

    async fn await_ports(&mut self, id: u64) -> anyhow::Result<()> {
        let port_file = self.dir.path().join(format!("coord-{id}.port"));
        let json: serde_json::Value = {
            let m = self.members.get_mut(&id).context("no such member")?;
            let process = m.process.as_mut().context("member not running")?;
            let pf = port_file.clone();
            wait_until(&format!("member {id} to write its port file"), Duration::from_secs(20), || {
                let exited = process.try_exit();
                let pf = pf.clone();
                async move {
                    if let Some(status) = exited {
                        return Some(Err(anyhow::anyhow!("member exited early with {status}")));
                    }
                    let text = std::fs::read_to_string(&pf).ok()?;
                    serde_json::from_str::<serde_json::Value>(&text).ok().map(Ok)
                }
            })
            .await??
        };
        let client: SocketAddr = json["client"].as_str().context("client addr")?.parse()?;
        let peer: SocketAddr = json["peer"].as_str().context("peer addr")?.parse()?;
        let m = self.members.get_mut(&id).context("no such member")?;
        m.client_bound = Some(client);
        m.peer_bound = Some(peer);
        m.metrics_bound = json["metrics"].as_str().and_then(|a| a.parse().ok());
        m.client_proxy.set_target(client);
        for ((_, to), proxy) in self.links.iter() {
            if *to == id {
                proxy.set_target(peer);
            }
        }
        Ok(())
    }

    /// Starts a new member `id` with `--join` (links to and from every other
    /// member through fresh proxies) and returns the peer address the
    /// existing members should use for it in `AddMember`.
    pub async fn start_joining_member(&mut self, id: u64) -> anyhow::Result<String> {
        let existing: Vec<u64> = self.members.keys().copied().collect();
        for &j in &existing {
            self.links.insert((id, j), Proxy::start().await?);
            self.links.insert((j, id), Proxy::start().await?);
        }
        self.members.insert(
            id,
            Member {
                id,
                data_dir: self.dir.path().join(format!("coord-{id}")),
                process: None,
                client_proxy: Proxy::start().await?,
                client_bound: None,
                peer_bound: None,
                metrics_bound: None,
                restarts: 0,
            },
        );
        self.spawn(id, true)?;
        self.await_ports(id).await?;
        let first = existing.first().copied().context("an existing member")?;
        Ok(self.links[&(first, id)].addr().to_string())
    }

    /// Client addresses (through the client proxies) of all members.
    pub fn client_addrs(&self) -> Vec<String> {
        self.members.values().map(|m| m.client_proxy.addr().to_string()).collect()
    }

    pub fn client_addr(&self, id: u64) -> String {
        self.members[&id].client_proxy.addr().to_string()
    }

    pub fn client(&self) -> CoordClient {
        CoordClient::new(&self.client_addrs()).expect("client addresses are valid")
    }

    pub fn client_with(&self, config: CoordConfig) -> CoordClient {
        CoordClient::with_config(&self.client_addrs(), config).expect("client addresses are valid")
    }

    /// Waits until some running member reports a leader that all running
    /// members agree on; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let running: Vec<u64> = self.members.values().filter(|m| m.process.is_some()).map(|m| m.id).collect();
        let client = self.client();
        eventually("an agreed leader", timeout, || {
            let client = client.clone();
            let running = running.clone();
            let addrs: Vec<(u64, String)> = running.iter().map(|id| (*id, self.client_addr(*id))).collect();
            async move {
                let mut leader = None;
                for (id, addr) in addrs {
                    let s = client.status_of(&addr).await.with_context(|| format!("status of member {id}"))?;
                    if s.leader_id == 0 {
                        anyhow::bail!("member {id} knows no leader");
                    }
                    if leader.is_some_and(|l| l != s.leader_id) {
                        anyhow::bail!("members disagree on the leader");
                    }
                    leader = Some(s.leader_id);
                }
                let leader = leader.context("no member running")?;
                if !running.contains(&leader) {
                    anyhow::bail!("leader {leader} is not running");
                }
                // The leader has published its client address.
                let s = client.status_of(&self.client_addr(leader).to_string()).await?;
                if s.members.iter().any(|m| m.id == leader && m.client_addr.is_empty()) {
                    anyhow::bail!("leader has not published its address yet");
                }
                Ok(leader)
            }
        })
        .await
    }

    pub async fn leader(&self) -> anyhow::Result<u64> {
        self.wait_for_leader(Duration::from_secs(20)).await
    }

    pub fn kill9(&mut self, id: u64) {
        if let Some(m) = self.members.get_mut(&id)
            && let Some(mut p) = m.process.take()
        {
            p.kill9();
        }
    }

    pub fn terminate(&mut self, id: u64) -> Option<i32> {
        self.members.get_mut(&id).and_then(|m| m.process.take()).and_then(|mut p| p.terminate())
    }

    /// Starts a stopped member again on its data dir.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id, false)?;
        self.await_ports(id).await
    }

    /// Cuts every link to and from member `id`, its client proxy included
    /// (a test can still reach it directly on its bound port).
    pub fn isolate(&self, id: u64) {
        for ((from, to), proxy) in &self.links {
            if *from == id || *to == id {
                proxy.cut();
            }
        }
        self.members[&id].client_proxy.cut();
    }

    pub fn heal(&self, id: u64) {
        for ((from, to), proxy) in &self.links {
            if *from == id || *to == id {
                proxy.heal();
            }
        }
        self.members[&id].client_proxy.heal();
    }

    pub fn process(&mut self, id: u64) -> Option<&mut ChildProcess> {
        self.members.get_mut(&id).and_then(|m| m.process.as_mut())
    }
}
