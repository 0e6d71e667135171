//! `hangar serve`: the gRPC server.

use std::path::PathBuf;

use anyhow::Context;
use hangar_services::server::config::{CliOverrides, Config};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Directory that model names resolve in (overrides `model_dir`).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// TOML config file (default: ./hangar.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Load this model at start-up (repeatable; replaces `preload`).
    #[arg(long)]
    preload: Vec<String>,
    /// Directory of plugin libraries loaded at start-up (overrides `plugin_dir`).
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let preload = (!a.preload.is_empty()).then_some(a.preload);
    let cli = CliOverrides { listen: a.listen, model_dir: a.model_dir, preload, plugin_dir: a.plugin_dir };
    let config = Config::load(a.config.as_deref(), &cli)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the Tokio runtime")?;
    rt.block_on(async move {
        let telemetry = hangar_services::server::telemetry::init(&config.telemetry)?;
        let server = hangar_services::server::start(config).await?;
        eprintln!("hangar listening on {}", server.addr);
        shutdown_signal().await;
        tracing::info!("shutting down");
        let r = server.shutdown().await;
        telemetry.shutdown().await;
        r.context("serving")
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
