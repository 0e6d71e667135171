//! The `hangar` binary. Its `--json` outputs are a contract that scripts and tests rely on.

mod cli;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    if cli.installs_own_tracing() {
        return cli::run(cli);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    cli::run(cli)
}
