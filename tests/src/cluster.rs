//! A whole cluster of real processes: a coordinator ensemble plus brokers,
//! each broker behind its own client proxy (which it advertises), so a
//! restarted broker keeps its address and a test can cut it off.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::ensemble::Ensemble;
use crate::netlab::{NetHost, NetLab};
use crate::process::{ChildProcess, binary};
use crate::proxy::Proxy;
use crate::wait::wait_until;

pub struct BrokerNode {
    pub id: i32,
    pub data_dir: PathBuf,
    pub process: Option<ChildProcess>,
    /// The broker's own network namespace, when the cluster was started
    /// isolatable (after `process`: dropped once the process is gone).
    pub net: Option<NetHost>,
    pub proxy: Proxy,
    pub bound: Option<SocketAddr>,
    /// The broker's Prometheus endpoint.
    pub metrics_bound: Option<SocketAddr>,
    starts: u32,
}

pub struct Cluster {
    pub brokers: BTreeMap<i32, BrokerNode>,
    pub ensemble: Ensemble,
    broker_config: String,
    /// Last: the lab outlives every namespace in it.
    pub lab: Option<NetLab>,
}

impl Cluster {
    /// 3 coordinators and `brokers` brokers with ids 1..=brokers.
    pub async fn start(brokers: i32) -> anyhow::Result<Cluster> {
        Self::start_with(3, brokers, "").await
    }

    pub async fn start_with(coordinators: u64, brokers: i32, broker_config: &str) -> anyhow::Result<Cluster> {
        Self::start_inner(coordinators, brokers, broker_config, None).await
    }

    /// Like `start_with`, but each broker runs in its own network namespace
    /// (`BrokerNode::net`), so a test can cut one off for real. Needs root.
    pub async fn start_isolatable(coordinators: u64, brokers: i32, broker_config: &str) -> anyhow::Result<Cluster> {
        Self::start_inner(coordinators, brokers, broker_config, Some(NetLab::create()?)).await
    }

    async fn start_inner(
        coordinators: u64,
        brokers: i32,
        broker_config: &str,
        lab: Option<NetLab>,
    ) -> anyhow::Result<Cluster> {
        let hub = lab.as_ref().map_or(std::net::Ipv4Addr::LOCALHOST.into(), NetLab::hub);
        let ensemble = Ensemble::start_with_options(coordinators, "", hub).await?;
        let mut cluster = Cluster { brokers: BTreeMap::new(), ensemble, broker_config: broker_config.to_string(), lab };
        for id in 1..=brokers {
            let net = match &cluster.lab {
                Some(lab) => Some(lab.add_host()?),
                None => None,
            };
            let node = BrokerNode {
                id,
                data_dir: cluster.ensemble.dir.path().join(format!("broker-{id}")),
                process: None,
                net,
                proxy: Proxy::start_on(hub).await?,
                bound: None,
                metrics_bound: None,
                starts: 0,
            };
            cluster.brokers.insert(id, node);
        }
        for id in 1..=brokers {
            cluster.spawn(id)?;
        }
        for id in 1..=brokers {
            cluster.await_port(id).await?;
        }
        cluster.wait_registered(brokers as usize).await?;
        Ok(cluster)
    }

    /// Waits until exactly `n` brokers are registered in the ensemble.
    pub async fn wait_registered(&self, n: usize) -> anyhow::Result<()> {
        let coord = self.ensemble.client();
        crate::wait::eventually(&format!("{n} registered brokers"), Duration::from_secs(30), || {
            let coord = coord.clone();
            async move {
                let (ids, _) = coord.children("/brokers/ids").await?;
                anyhow::ensure!(ids.len() == n, "{} registered", ids.len());
                Ok(())
            }
        })
        .await
    }

    fn spawn(&mut self, id: i32) -> anyhow::Result<()> {
        let coordinators = self.ensemble.client_addrs().join(",");
        let dir = self.ensemble.dir.path().to_path_buf();
        let config_path = dir.join(format!("broker-{id}.toml"));
        std::fs::write(&config_path, &self.broker_config)?;
        let node = self.brokers.get_mut(&id).context("no such broker")?;
        let port_file = dir.join(format!("broker-{id}.port"));
        let _ = std::fs::remove_file(&port_file);
        node.starts += 1;
        let listen = match &node.net {
            Some(host) => format!("{}:0", host.ip),
            None => "127.0.0.1:0".into(),
        };
        let metrics_listen = listen.clone();
        let args = vec![
            "--id".to_string(),
            id.to_string(),
            "--metrics-listen".into(),
            metrics_listen,
            "--listen".into(),
            listen,
            "--advertise".into(),
            node.proxy.addr().to_string(),
            "--coordinators".into(),
            coordinators,
            "--data-dir".into(),
            node.data_dir.display().to_string(),
            "--config".into(),
            config_path.display().to_string(),
            "--port-file".into(),
            port_file.display().to_string(),
        ];
        let log = dir.join(format!("broker-{id}.{}.log", node.starts));
        let (program, args) = match &node.net {
            Some(host) => host.wrap(&binary("strata-broker"), &args),
            None => (binary("strata-broker"), args),
        };
        node.process = Some(ChildProcess::spawn(&format!("broker-{id}"), &program, &args, &log)?);
        Ok(())
    }

    async fn await_port(&mut self, id: i32) -> anyhow::Result<()> {
        let port_file = self.ensemble.dir.path().join(format!("broker-{id}.port"));
        let node = self.brokers.get_mut(&id).context("no such broker")?;
        let process = node.process.as_mut().context("broker not running")?;
        let json: serde_json::Value = wait_until(&format!("broker {id} to serve"), Duration::from_secs(30), || {
            let exited = process.try_exit();
            let pf = port_file.clone();
            async move {
                if let Some(status) = exited {
                    return Some(Err(anyhow::anyhow!("broker {id} exited early with {status}")));
                }
                let text = std::fs::read_to_string(&pf).ok()?;
                serde_json::from_str::<serde_json::Value>(&text).ok().map(Ok)
            }
        })
        .await??;
        let addr: SocketAddr = json["addr"].as_str().context("addr")?.parse()?;
        node.bound = Some(addr);
        node.metrics_bound = json["metrics"].as_str().and_then(|a| a.parse().ok());
        node.proxy.set_target(addr);
        Ok(())
    }

    /// Broker addresses clients bootstrap from (the proxies).
    pub fn bootstrap(&self) -> Vec<String> {
        self.brokers.values().map(|b| b.proxy.addr().to_string()).collect()
    }

    pub fn broker_addr(&self, id: i32) -> String {
        self.brokers[&id].proxy.addr().to_string()
    }

    pub fn kill9(&mut self, id: i32) {
        if let Some(mut p) = self.brokers.get_mut(&id).and_then(|b| b.process.take()) {
            p.kill9();
        }
    }

    pub fn terminate(&mut self, id: i32) -> Option<i32> {
        self.brokers.get_mut(&id).and_then(|b| b.process.take()).and_then(|mut p| p.terminate())
    }

    pub async fn restart(&mut self, id: i32) -> anyhow::Result<()> {
        self.spawn(id)?;
        self.await_port(id).await
    }

    pub fn process(&mut self, id: i32) -> Option<&mut ChildProcess> {
        self.brokers.get_mut(&id).and_then(|b| b.process.as_mut())
    }
}
