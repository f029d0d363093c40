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
        _ => {
            // A reader that goes away (`strata group describe | head`) ends
            // a command quietly, as with any Unix tool, instead of a panic
            // inside println!. Servers keep Rust's default (ignored) so a
            // closed log pipe cannot kill them.
            // SAFETY: setting a signal disposition before any thread of ours
            // depends on it; SIG_DFL is a valid handler.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            "error"
        }
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
