use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = strata_client::cli::Cli::parse();
    // Servers started by `strata dev` log at info; the CLI itself stays quiet.
    let default = match cli.command {
        strata_client::cli::Command::InternalCoordinator(_) | strata_client::cli::Command::InternalBroker(_) => {
            "info,openraft=warn,sled=warn"
        }
        // The CLI reports failures itself; retries in progress are noise.
        _ => "error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    std::process::exit(strata_client::cli::run(cli).await);
}
