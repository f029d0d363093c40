//! `strata dev`: a whole local cluster (coordinators and brokers) in one
//! command.
//!
//! The `strata` binary carries the coordinator (and, as it lands, the
//! broker) as libraries and starts each member as a child process of
//! itself, so `cargo run --bin strata -- dev` needs no other build step.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::coord::{CoordClient, CoordConfig};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where members keep their data; a second run reuses it.
    #[arg(long, default_value = ".strata-dev")]
    pub data_dir: PathBuf,
    /// One coordinator instead of three.
    #[arg(long)]
    pub single: bool,
    /// First coordinator client port; peers use this + 100.
    #[arg(long, default_value_t = 9181)]
    pub coordinator_port: u16,
    /// First broker port.
    #[arg(long, default_value_t = 9092)]
    pub broker_port: u16,
}

struct Member {
    name: String,
    child: Child,
    log: PathBuf,
}

fn spawn_member(name: &str, args: &[String], log: &Path) -> anyhow::Result<Member> {
    let exe = std::env::current_exe().context("cannot find the strata executable")?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot write {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).env("NO_COLOR", "1");
    // SAFETY: prctl is async-signal-safe; it makes the child die with us,
    // so a killed `strata dev` leaves no orphans behind.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("cannot start {name}"))?;
    Ok(Member { name: name.to_string(), child, log: log.to_path_buf() })
}

/// A start-up failure message if any member has exited.
fn exited(members: &mut [Member]) -> Option<String> {
    for m in members.iter_mut() {
        if let Ok(Some(status)) = m.child.try_wait() {
            return Some(format!("{} exited with {status} during start-up:\n{}", m.name, tail(&m.log, 20)));
        }
    }
    None
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Stops brokers before coordinators, so brokers can still close their
/// ensemble sessions (deregistering at once) on the way out.
fn stop_all(members: &mut [Member]) {
    let (brokers, coordinators): (Vec<&mut Member>, Vec<&mut Member>) =
        members.iter_mut().partition(|m| m.name.starts_with("broker"));
    stop_group(brokers);
    stop_group(coordinators);
}

fn stop_group(mut members: Vec<&mut Member>) {
    for m in members.iter() {
        // SAFETY: signalling children we spawned and have not reaped.
        unsafe {
            libc::kill(m.child.id() as i32, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for m in members.iter_mut() {
        loop {
            match m.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = m.child.kill();
                    let _ = m.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let n: u16 = if args.single { 1 } else { 3 };
    let logs = args.data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let base = args.coordinator_port;
    let peers: Vec<String> = (0..n).map(|i| format!("{}=127.0.0.1:{}", i + 1, base + 100 + i)).collect();
    let client_addrs: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let mut members = Vec::new();
    for i in 0..n {
        let id = i + 1;
        let member_args = vec![
            "internal-coordinator".to_string(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            client_addrs[i as usize].clone(),
            "--peers".into(),
            peers.join(","),
            "--data-dir".into(),
            args.data_dir.join(format!("coordinator-{id}")).display().to_string(),
        ];
        let log = logs.join(format!("coordinator-{id}.log"));
        match spawn_member(&format!("coordinator-{id}"), &member_args, &log) {
            Ok(m) => members.push(m),
            Err(e) => {
                stop_all(&mut members);
                return Err(e);
            }
        }
    }
    let client = CoordClient::with_config(
        &client_addrs,
        CoordConfig { retry_for: Duration::from_secs(2), ..Default::default() },
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(msg) = exited(&mut members) {
            stop_all(&mut members);
            bail!("{msg}");
        }
        if let Ok(s) = client.status().await
            && s.leader_id != 0
            && s.members.iter().all(|m| !m.client_addr.is_empty())
        {
            break;
        }
        if Instant::now() >= deadline {
            stop_all(&mut members);
            bail!("the local ensemble did not elect a leader within 30 s; logs are in {}", logs.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let broker_addrs: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", args.broker_port + i)).collect();
    for i in 0..n {
        let id = i + 1;
        let broker_args = vec![
            "internal-broker".to_string(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            broker_addrs[i as usize].clone(),
            "--coordinators".into(),
            client_addrs.join(","),
            "--data-dir".into(),
            args.data_dir.join(format!("broker-{id}")).display().to_string(),
        ];
        let log = logs.join(format!("broker-{id}.log"));
        match spawn_member(&format!("broker-{id}"), &broker_args, &log) {
            Ok(m) => members.push(m),
            Err(e) => {
                stop_all(&mut members);
                return Err(e);
            }
        }
    }
    // Healthy when every broker is registered in the ensemble.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(msg) = exited(&mut members) {
            stop_all(&mut members);
            bail!("{msg}");
        }
        if let Ok((ids, _)) = client.children("/brokers/ids").await
            && ids.len() == n as usize
        {
            break;
        }
        if Instant::now() >= deadline {
            stop_all(&mut members);
            bail!("the brokers did not register within 60 s; logs are in {}", logs.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plural = if n == 1 { "" } else { "s" };
    println!("Strata dev cluster is up ({n} coordinator{plural}, {n} broker{plural}).");
    println!("  bootstrap:    {}", broker_addrs.join(","));
    println!("  coordinators: {}", client_addrs.join(","));
    println!("  data:         {}", args.data_dir.display());
    println!("  logs:         {}", logs.display());
    println!();
    println!("Try, in another terminal:");
    println!("  strata cluster status");
    println!("  strata topic create demo --partitions 3 --replication-factor 3");
    println!("  seq 1 10 | strata produce demo");
    println!("  strata consume demo --from-beginning --max-messages 10");
    println!();
    println!("Ctrl-C stops every member.");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut watchdog = tokio::time::interval(Duration::from_millis(500));
    let mut reported = vec![false; members.len()];
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = watchdog.tick() => {
                // A member that dies is reported, not restarted: the rest of
                // the cluster keeps running, as a real one would.
                for (i, m) in members.iter_mut().enumerate() {
                    if !reported[i]
                        && let Ok(Some(status)) = m.child.try_wait() {
                            reported[i] = true;
                            eprintln!("{} exited with {status}; last log lines:\n{}", m.name, tail(&m.log, 20));
                        }
                }
            }
        }
    }
    eprintln!("stopping...");
    stop_all(&mut members);
    eprintln!("stopped.");
    Ok(())
}
