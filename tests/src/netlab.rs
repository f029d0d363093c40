//! Real network isolation for multi-process tests: each isolatable process
//! runs in its own network namespace, joined to the test's (root)
//! namespace by a veth pair, so a test can pull the cable (`cut`) or drop
//! chosen TCP traffic with iptables inside the namespace (`block_tcp_to`).
//!
//! Everything a namespaced process talks to (the coordinators' and brokers'
//! proxies) listens on one "hub" address in the root namespace, added to
//! its loopback interface, which every namespace reaches through its
//! default route.
//!
//! Needs root (CAP_NET_ADMIN), as CI has here. Names carry the test
//! process's pid; everything is removed on drop.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Context as _, bail};

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The root-namespace side: the hub address on the loopback interface.
pub struct NetLab {
    tag: String,
    /// 10.a.b.0/24 is this lab's: the hub is .1, hosts take /30s above it.
    net: (u8, u8),
    next_host: AtomicU8,
}

impl NetLab {
    pub fn create() -> anyhow::Result<NetLab> {
        let pid = std::process::id();
        let tag = format!("s{}", pid % 1_000_000);
        for attempt in 0..50u32 {
            let seed = pid.wrapping_mul(2_654_435_761).wrapping_add(attempt.wrapping_mul(40_503));
            let net = (100 + (seed % 100) as u8, ((seed >> 8) % 256) as u8);
            let subnet = format!("10.{}.{}.0/24", net.0, net.1);
            let used = Command::new("ip").args(["-4", "route", "show", "match", &subnet]).output()?;
            if String::from_utf8_lossy(&used.stdout).lines().any(|l| l.starts_with(&format!("10.{}.{}.", net.0, net.1)))
            {
                continue;
            }
            let lab = NetLab { tag, net, next_host: AtomicU8::new(1) };
            run(&["ip", "addr", "add", &format!("{}/32", lab.hub()), "dev", "lo"])
                .context("network-namespace tests need root (CAP_NET_ADMIN) and the `ip` and `iptables` tools")?;
            return Ok(lab);
        }
        bail!("no free 10.x.y.0/24 for the test network")
    }

    /// The root-namespace address every namespace can reach.
    pub fn hub(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, self.net.0, self.net.1, 1))
    }

    /// A new namespace with its own link to the root namespace.
    pub fn add_host(&self) -> anyhow::Result<NetHost> {
        let n = self.next_host.fetch_add(1, Ordering::Relaxed);
        anyhow::ensure!(n < 60, "too many hosts in one lab");
        let ns = format!("{}h{n}", self.tag);
        let (root_if, host_if) = (format!("{}r{n}", self.tag), format!("{}n{n}", self.tag));
        let (a, b) = self.net;
        let base = 4 * n + 4;
        let root_ip = format!("10.{a}.{b}.{}", base + 1);
        let host_ip = Ipv4Addr::new(10, a, b, base + 2);
        run(&["ip", "netns", "add", &ns])?;
        let host = NetHost { ns: ns.clone(), root_if: root_if.clone(), ip: IpAddr::V4(host_ip) };
        run(&["ip", "link", "add", &root_if, "type", "veth", "peer", "name", &host_if])?;
        run(&["ip", "link", "set", &host_if, "netns", &ns])?;
        run(&["ip", "addr", "add", &format!("{root_ip}/30"), "dev", &root_if])?;
        run(&["ip", "link", "set", &root_if, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", ns.as_str()];
            full.extend_from_slice(args);
            run(&full)
        };
        in_ns(&["ip", "link", "set", "lo", "up"])?;
        in_ns(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        in_ns(&["ip", "link", "set", &host_if, "up"])?;
        in_ns(&["ip", "route", "add", "default", "via", &root_ip])?;
        Ok(host)
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        let _ = run(&["ip", "addr", "del", &format!("{}/32", self.hub()), "dev", "lo"]);
    }
}

/// One namespace: a host a test can cut off.
pub struct NetHost {
    pub ns: String,
    root_if: String,
    /// The host's own address (listen here).
    pub ip: IpAddr,
}

impl NetHost {
    /// `program args...` run inside the namespace.
    pub fn wrap(&self, program: &std::path::Path, args: &[String]) -> (std::path::PathBuf, Vec<String>) {
        let mut full = vec!["netns".to_string(), "exec".into(), self.ns.clone(), program.display().to_string()];
        full.extend_from_slice(args);
        ("ip".into(), full)
    }

    /// Pulls the cable: nothing in or out until `heal`.
    pub fn cut(&self) -> anyhow::Result<()> {
        run(&["ip", "link", "set", &self.root_if, "down"])
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        run(&["ip", "link", "set", &self.root_if, "up"])
    }

    /// Drops every TCP packet between this host and `ip:port` for each port
    /// (established connections included), until `unblock_all`.
    pub fn block_tcp_to(&self, ip: IpAddr, ports: &[u16]) -> anyhow::Result<()> {
        for port in ports {
            let (ip, port) = (ip.to_string(), port.to_string());
            let ns = self.ns.as_str();
            run(&[
                "ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "-p", "tcp", "-d", &ip, "--dport", &port, "-j",
                "DROP",
            ])?;
            run(&[
                "ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-p", "tcp", "-s", &ip, "--sport", &port, "-j",
                "DROP",
            ])?;
        }
        Ok(())
    }

    pub fn unblock_all(&self) -> anyhow::Result<()> {
        run(&["ip", "netns", "exec", &self.ns, "iptables", "-F"])
    }
}

impl Drop for NetHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth, and with it
        // the root end.
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = run(&["ip", "link", "del", &self.root_if]);
    }
}
