//! The `strata` command line. Prints for people by default, JSON with
//! `--json`; exit code 0 on success, 1 on a failed operation, 2 on bad usage.

pub mod coord;

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
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Coord { args, command } => coord::run_coord(&args, command).await,
        Command::Cluster { args, command } => coord::run_cluster(&args, command).await,
        Command::Perf { command } => crate::perf::run(command).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
