//! `strata perf ...`: load generators that print throughput and latency
//! percentiles (HDR histograms), for people or as JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::cli::DEFAULT_COORDINATORS;
use crate::coord::{Consistency, CoordClient, CreateOptions};

#[derive(Debug, Subcommand)]
pub enum PerfCommand {
    /// Creates, sets and gets of small values against the coordinator
    /// ensemble, closed-loop and pipelined, plus watch-notification latency.
    Coord(CoordPerfArgs),
    /// Produce records as fast as allowed; records/s, MB/s, latency percentiles.
    Produce(crate::perf_log::ProducePerfArgs),
    /// Consume a topic from the beginning; records/s and MB/s.
    Consume(crate::perf_log::ConsumePerfArgs),
}

#[derive(Debug, Args)]
pub struct CoordPerfArgs {
    #[arg(long, env = "STRATA_COORDINATORS", default_value = DEFAULT_COORDINATORS)]
    pub coordinators: String,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Operations to run: create, set, get, get-serializable.
    #[arg(long, value_delimiter = ',', default_value = "create,set,get,get-serializable")]
    pub ops: Vec<String>,
    /// Client layouts: N = N closed-loop clients; CxI = C connections with I requests in flight each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,4x64")]
    pub clients: Vec<String>,
    /// Also measure watch-notification latency over this many changes (0 = skip).
    #[arg(long, default_value_t = 2000)]
    pub watch_events: u64,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: PerfCommand) -> anyhow::Result<()> {
    match command {
        PerfCommand::Coord(args) => coord(args).await,
        PerfCommand::Produce(args) => crate::perf_log::produce(args).await,
        PerfCommand::Consume(args) => crate::perf_log::consume(args).await,
    }
}

#[derive(Debug, Clone, Copy)]
struct Layout {
    connections: usize,
    in_flight: usize,
}

fn parse_layout(s: &str) -> anyhow::Result<Layout> {
    let s = s.trim();
    if let Some((c, i)) = s.split_once('x') {
        Ok(Layout { connections: c.parse().context("connections")?, in_flight: i.parse().context("in flight")? })
    } else {
        Ok(Layout { connections: s.parse().context("clients")?, in_flight: 1 })
    }
}

struct RunResult {
    op: String,
    layout: String,
    ops: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
}

impl RunResult {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

async fn coord(args: CoordPerfArgs) -> anyhow::Result<()> {
    let addrs: Vec<String> = args.coordinators.split(',').map(|s| s.trim().to_string()).collect();
    let setup = CoordClient::new(&addrs)?;
    let run_id = format!("{:x}", rand::random::<u32>());
    let base = format!("/perf-{run_id}");
    setup.create(&base, Vec::<u8>::new(), CreateOptions::persistent()).await.context("creating the perf root")?;
    let value = vec![b'x'; args.value_size];
    let duration = Duration::from_secs(args.duration);
    let mut results = Vec::new();
    for layout_spec in &args.clients {
        let layout = parse_layout(layout_spec)?;
        let workers = layout.connections * layout.in_flight;
        // Nodes for set/get: one per worker, created once per layout.
        let layout_base = format!("{base}/{}", layout_spec.replace('x', "_"));
        setup.create(&layout_base, Vec::<u8>::new(), CreateOptions::persistent()).await?;
        for w in 0..workers {
            setup.create(&format!("{layout_base}/n{w}"), value.clone(), CreateOptions::persistent()).await?;
        }
        for op in &args.ops {
            let r = run_one(&addrs, op, layout, layout_spec, &layout_base, &value, duration, !args.json).await?;
            if !args.json {
                eprintln!(
                    "{:<17} {:>6}  {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  errors {}",
                    r.op,
                    r.layout,
                    r.ops_per_sec(),
                    r.ms(0.5),
                    r.ms(0.99),
                    r.ms(0.999),
                    r.errors
                );
            }
            results.push(r);
        }
    }
    let watch = if args.watch_events > 0 { Some(watch_latency(&addrs, &base, args.watch_events).await?) } else { None };
    if args.json {
        let runs: Vec<_> = results
            .iter()
            .map(|r| {
                json!({
                    "op": r.op, "clients": r.layout, "ops": r.ops, "errors": r.errors,
                    "ops_per_sec": r.ops_per_sec(), "p50_ms": r.ms(0.5), "p99_ms": r.ms(0.99),
                    "p999_ms": r.ms(0.999), "max_ms": r.hist.max() as f64 / 1000.0,
                })
            })
            .collect();
        let watch_json = watch.as_ref().map(|h| json!({ "events": h.len(), "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0, "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0 }));
        println!("{}", json!({ "runs": runs, "watch": watch_json }));
    } else {
        println!("{:<17} {:>7} {:>11} {:>9} {:>9} {:>9}", "OP", "CLIENTS", "OPS/S", "P50 MS", "P99 MS", "ERRORS");
        for r in &results {
            println!(
                "{:<17} {:>7} {:>11.0} {:>9.2} {:>9.2} {:>9}",
                r.op,
                r.layout,
                r.ops_per_sec(),
                r.ms(0.5),
                r.ms(0.99),
                r.errors
            );
        }
        if let Some(h) = watch {
            println!(
                "watch notification latency over {} changes: p50 {:.2} ms, p99 {:.2} ms",
                h.len(),
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0
            );
        }
    }
    // Best effort: leave no load-test nodes behind.
    let _ = tokio::time::timeout(Duration::from_secs(60), cleanup(&setup, &base)).await;
    Ok(())
}

async fn cleanup(c: &CoordClient, base: &str) {
    let Ok((layouts, _)) = c.children(base).await else { return };
    for l in layouts {
        let lp = format!("{base}/{l}");
        if let Ok((nodes, _)) = c.children(&lp).await {
            let mut pending = Vec::new();
            for n in nodes {
                let c = c.clone();
                let p = format!("{lp}/{n}");
                pending.push(tokio::spawn(async move { c.delete(&p, None).await }));
                if pending.len() >= 64 {
                    for t in pending.drain(..) {
                        let _ = t.await;
                    }
                }
            }
            for t in pending {
                let _ = t.await;
            }
        }
        let _ = c.delete(&lp, None).await;
    }
    let _ = c.delete(base, None).await;
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    addrs: &[String],
    op: &str,
    layout: Layout,
    layout_spec: &str,
    base: &str,
    value: &[u8],
    duration: Duration,
    progress: bool,
) -> anyhow::Result<RunResult> {
    if !matches!(op, "create" | "set" | "get" | "get-serializable") {
        anyhow::bail!("unknown op {op:?} (create, set, get, get-serializable)");
    }
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(duration.as_secs());
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}s")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(format!("{op} {layout_spec}"));
        b
    });
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for conn in 0..layout.connections {
        let client = CoordClient::new(addrs)?;
        for slot in 0..layout.in_flight {
            let worker = conn * layout.in_flight + slot;
            let client = client.clone();
            let op = op.to_string();
            let node = format!("{base}/n{worker}");
            let value = value.to_vec();
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds");
                let mut errors = 0u64;
                let mut i = 0u64;
                while Instant::now() < end {
                    let t = Instant::now();
                    let r = match op.as_str() {
                        "create" => client
                            .create(&format!("{node}-c{i}"), value.clone(), CreateOptions::persistent())
                            .await
                            .map(|_| ()),
                        "set" => client.set(&node, value.clone(), None).await.map(|_| ()),
                        "get" => client.get_with(&node, Consistency::Linearizable).await.map(|_| ()),
                        _ => client.get_with(&node, Consistency::Serializable).await.map(|_| ()),
                    };
                    match r {
                        Ok(()) => {
                            let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => errors += 1,
                    }
                    i += 1;
                }
                (hist, errors)
            }));
        }
    }
    let ticker = bar.clone().map(|b| {
        tokio::spawn(async move {
            while Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(250)).await;
                b.set_position(start.elapsed().as_secs().min(b.length().unwrap_or(0)));
            }
        })
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await?;
        hist.add(h)?;
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // Creates made nodes under each worker's own name; clean them now so
    // later runs measure the same tree size.
    if op == "create" {
        let c = CoordClient::new(addrs)?;
        let (names, _) = c.children(base).await?;
        let mut pending = Vec::new();
        for n in names.into_iter().filter(|n| n.contains("-c")) {
            let c = c.clone();
            let p = format!("{base}/{n}");
            pending.push(tokio::spawn(async move { c.delete(&p, None).await }));
            if pending.len() >= 128 {
                for t in pending.drain(..) {
                    let _ = t.await;
                }
            }
        }
        for t in pending {
            let _ = t.await;
        }
    }
    Ok(RunResult { op: op.to_string(), layout: layout_spec.to_string(), ops: hist.len(), errors, secs, hist })
}

/// Time from sending a set to a watcher (on its own connection) receiving
/// the change: commit plus notification, as a watcher experiences it.
async fn watch_latency(addrs: &[String], base: &str, events: u64) -> anyhow::Result<Histogram<u64>> {
    let writer = CoordClient::new(addrs)?;
    let watcher = CoordClient::new(addrs)?;
    let path = format!("{base}/watched");
    let (_, stat) = writer.create(&path, Vec::<u8>::new(), CreateOptions::persistent()).await?;
    let mut stream = watcher.watch(&path, false, stat.mod_revision + 1);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..events {
        let t = Instant::now();
        writer.set(&path, i.to_string().into_bytes(), None).await?;
        loop {
            let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .context("watch event did not arrive within 10 s")??;
            if batch.iter().any(|e| e.data.as_ref() == i.to_string().as_bytes()) {
                break;
            }
        }
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    Ok(hist)
}
