//! The `strata` command line. Prints for people by default, JSON with
//! `--json`; exit code 0 on success, 1 on a failed operation, 2 on bad usage.

pub mod coord;
pub mod dev;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_COORDINATORS: &str = "127.0.0.1:9181,127.0.0.1:9182,127.0.0.1:9183";

#[derive(Debug, Parser)]
#[command(name = "strata", version, about = "Strata: a distributed, replicated commit log")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct CoordArgs {
    /// Coordinator client addresses, comma separated.
    #[arg(long, env = "STRATA_COORDINATORS", default_value = DEFAULT_COORDINATORS, global = true)]
    pub coordinators: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl CoordArgs {
    pub fn addrs(&self) -> Vec<String> {
        self.coordinators.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Browse and edit the coordinator ensemble's namespace.
    Coord {
        #[command(flatten)]
        args: CoordArgs,
        #[command(subcommand)]
        command: coord::CoordCommand,
    },
    /// Cluster-wide views.
    Cluster {
        #[command(flatten)]
        args: CoordArgs,
        #[command(subcommand)]
        command: coord::ClusterCommand,
    },
    /// Load tests with progress and latency percentiles.
    Perf {
        #[command(subcommand)]
        command: crate::perf::PerfCommand,
    },
    /// Run a local cluster (3 coordinators, 3 brokers) until Ctrl-C.
    Dev(dev::DevArgs),
    /// Runs a coordinator member in this process (what `strata dev` starts).
    #[command(hide = true)]
    InternalCoordinator(strata_coordinator::config::Flags),
    /// Runs a broker in this process (what `strata dev` starts).
    #[command(hide = true)]
    InternalBroker(strata_broker::config::Flags),
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Coord { args, command } => coord::run_coord(&args, command).await,
        Command::Cluster { args, command } => coord::run_cluster(&args, command).await,
        Command::Perf { command } => crate::perf::run(command).await,
        Command::Dev(args) => dev::run(args).await,
        Command::InternalCoordinator(flags) => run_coordinator(flags).await,
        Command::InternalBroker(flags) => run_broker(flags).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

async fn run_coordinator(flags: strata_coordinator::config::Flags) -> anyhow::Result<()> {
    let config = strata_coordinator::config::Config::from_flags(flags)?;
    let shutdown = strata_coordinator::shutdown::on_signals();
    strata_coordinator::server::run(config, shutdown).await
}

async fn run_broker(flags: strata_broker::config::Flags) -> anyhow::Result<()> {
    let config = strata_broker::config::Config::from_flags(flags)?;
    let shutdown = strata_broker::server::on_signals();
    strata_broker::server::run(config, shutdown).await
}
