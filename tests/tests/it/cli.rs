//! The `strata` command line as a newcomer uses it: `strata dev`, then the
//! README's quickstart, then Ctrl-C.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_tests::binary;

/// The quickstart commands this test runs; each must appear verbatim in
/// README.md, so the README and the test cannot drift apart.
const QUICKSTART: &[&str] = &[
    "strata cluster status",
    "strata topic create demo --partitions 3 --replication-factor 3",
    "strata topic describe demo",
    "strata topic elect-leaders demo",
    "seq 1 10 | strata produce demo",
    "strata consume demo --from-beginning --max-messages 10",
    "printf 'user1:hello\\nuser2:world\\n' | strata produce demo --key-separator :",
    "strata consume demo --from-beginning --max-messages 12 -f 'partition %p offset %o: %k=%s\\n'",
];

fn free_base_port() -> u16 {
    // Three consecutive client ports and the peer ports 100 above them.
    loop {
        let base = 20_000 + (rand::random::<u16>() % 30_000);
        let all_free = (0..3).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + 100 + i)).is_ok()
        });
        if all_free {
            return base;
        }
    }
}

fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(needle)
        {
            pids.push(pid);
        }
    }
    pids
}

fn run_shell(line: &str, env: &[(&str, String)], dir: &Path) -> anyhow::Result<String> {
    let bin_dir = binary("strata").parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .env("PATH", path)
        .envs(env.iter().cloned())
        .output()?;
    anyhow::ensure!(out.status.success(), "`{line}` failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn readme_quickstart_runs_against_strata_dev_and_ctrl_c_leaves_no_process() -> anyhow::Result<()> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))?;
    for line in QUICKSTART {
        assert!(readme.contains(line), "README.md no longer contains `{line}`");
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("dev-data");
    let coord_base = free_base_port();
    let broker_base = free_base_port();
    let mut dev = Command::new(binary("strata"))
        .args(["dev", "--data-dir"])
        .arg(&data)
        .args(["--coordinator-port", &coord_base.to_string(), "--broker-port", &broker_base.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = dev.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        if line.contains("is up") {
            break;
        }
    }
    let env = [
        ("STRATA_BOOTSTRAP", (0..3).map(|i| format!("127.0.0.1:{}", broker_base + i)).collect::<Vec<_>>().join(",")),
        ("STRATA_COORDINATORS", (0..3).map(|i| format!("127.0.0.1:{}", coord_base + i)).collect::<Vec<_>>().join(",")),
    ];
    let result = (|| -> anyhow::Result<()> {
        let status = run_shell(QUICKSTART[0], &env, dir.path())?;
        assert!(status.contains("brokers: 3 live"), "{status}");
        run_shell(QUICKSTART[1], &env, dir.path())?;
        let describe = run_shell(QUICKSTART[2], &env, dir.path())?;
        assert!(describe.contains("3 partitions"), "{describe}");
        let elected = run_shell(QUICKSTART[3], &env, dir.path())?;
        assert!(elected.contains("3 partitions led by their preferred replica, 0 not"), "{elected}");
        run_shell(QUICKSTART[4], &env, dir.path())?;
        let consumed = run_shell(QUICKSTART[5], &env, dir.path())?;
        let mut values: Vec<u32> = consumed.lines().map(|l| l.trim().parse().expect("numbers")).collect();
        values.sort_unstable();
        assert_eq!(values, (1..=10).collect::<Vec<_>>());
        run_shell(QUICKSTART[6], &env, dir.path())?;
        let formatted = run_shell(QUICKSTART[7], &env, dir.path())?;
        assert_eq!(formatted.lines().count(), 12, "{formatted}");
        let keyed: Vec<&str> = formatted.lines().filter(|l| l.contains(": user")).collect();
        assert_eq!(keyed.len(), 2, "{formatted}");
        assert!(keyed.iter().any(|l| l.starts_with("partition ") && l.ends_with(": user1=hello")), "{formatted}");
        Ok(())
    })();
    // Ctrl-C: every member stops, none is left behind.
    // SAFETY: signalling the child we spawned.
    unsafe {
        libc::kill(dev.id() as i32, libc::SIGINT);
    }
    let stop_deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = dev.try_wait()? {
            break s;
        }
        anyhow::ensure!(Instant::now() < stop_deadline, "strata dev did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    if result.is_err() {
        let mut err = String::new();
        if let Some(mut e) = dev.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let _ = writeln!(std::io::stderr(), "strata dev stderr:\n{err}");
    }
    result?;
    assert!(status.success(), "strata dev exited with {status}");
    let needle = data.display().to_string();
    let left = processes_mentioning(&needle);
    assert!(left.is_empty(), "processes left running after Ctrl-C: {left:?}");
    Ok(())
}
