//! The `strata` command line. Prints for people by default, JSON with
//! `--json`; exit code 0 on success, 1 on a failed operation, 2 on bad usage.

pub mod consume;
pub mod coord;
pub mod dev;
pub mod group;
pub mod health;
pub mod produce;
pub mod topic;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_COORDINATORS: &str = "127.0.0.1:9181,127.0.0.1:9182,127.0.0.1:9183";
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094";

#[derive(Debug, Args, Clone)]
pub struct BrokerArgs {
    /// Broker addresses to bootstrap from, comma separated.
    #[arg(long, env = "STRATA_BOOTSTRAP", default_value = DEFAULT_BOOTSTRAP, global = true)]
    pub bootstrap: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl BrokerArgs {
    pub fn addrs(&self) -> Vec<String> {
        self.bootstrap.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    }
}

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
    /// Cluster-wide views: brokers, controller and ensemble.
    Cluster {
        #[command(flatten)]
        args: CoordArgs,
        #[arg(long, env = "STRATA_BOOTSTRAP", default_value = DEFAULT_BOOTSTRAP, global = true)]
        bootstrap: String,
        #[command(subcommand)]
        command: coord::ClusterCommand,
    },
    /// Create, list, describe, alter and delete topics.
    Topic {
        #[command(flatten)]
        args: BrokerArgs,
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// Send stdin lines to a topic, one record per line.
    Produce {
        #[command(flatten)]
        args: BrokerArgs,
        #[command(flatten)]
        produce: produce::ProduceArgs,
    },
    /// Print a topic's records.
    Consume {
        #[command(flatten)]
        args: BrokerArgs,
        #[command(flatten)]
        consume: consume::ConsumeArgs,
    },
    /// List, describe, reset the offsets of, and delete consumer groups.
    Group {
        #[command(flatten)]
        args: BrokerArgs,
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Load tests with progress and latency percentiles.
    Perf {
        #[command(subcommand)]
        command: crate::perf::PerfCommand,
    },
    /// Run a local cluster (3 coordinators, 3 brokers) until Ctrl-C.
    Dev(dev::DevArgs),
    /// Ask a server's gRPC health service; exit 0 when SERVING, 1 otherwise.
    Health(health::HealthArgs),
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
        Command::Cluster { args, bootstrap, command } => coord::run_cluster(&args, &bootstrap, command).await,
        Command::Topic { args, command } => topic::run(&args, command).await,
        Command::Produce { args, produce } => produce::run(&args, produce).await,
        Command::Consume { args, consume } => consume::run(&args, consume).await,
        Command::Group { args, command } => group::run(&args, command).await,
        Command::Perf { command } => crate::perf::run(command).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Health(args) => health::run(args).await,
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
