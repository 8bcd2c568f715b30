//! `agora-inventory`: the inventory service on its own, configured by flags and
//! environment.

use std::process::ExitCode;

use agora_interceptors::{shutdown, telemetry};
use agora_inventory::InventoryConfig;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = InventoryConfig::parse();
    telemetry::init(config.serve.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("agora-inventory failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: InventoryConfig) -> anyhow::Result<()> {
    if config.migrate_only {
        agora_inventory::open_database(&config).await?.close().await;
        tracing::info!("migrations applied");
        return Ok(());
    }
    let key_set = config.serve.key_set()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "agora-inventory listening");
    agora_inventory::serve(config, key_set, listener, shutdown::signal()).await
}
