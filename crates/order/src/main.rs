//! `agora-order`: the order service on its own, configured by flags and environment.

use std::process::ExitCode;

use agora_interceptors::{shutdown, telemetry};
use agora_order::{OrderConfig, OrderKeys};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = OrderConfig::parse();
    telemetry::init(config.serve.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("agora-order failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: OrderConfig) -> anyhow::Result<()> {
    if config.migrate_only {
        agora_order::open_database(&config).await?.close().await;
        tracing::info!("migrations applied");
        return Ok(());
    }
    let keys = OrderKeys::load(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "agora-order listening");
    agora_order::serve(config, keys, listener, shutdown::signal()).await
}
