//! `agora-user`: the user service on its own, configured by flags and environment.

use std::process::ExitCode;

use agora_interceptors::{shutdown, telemetry};
use agora_user::{UserConfig, UserKeys};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = UserConfig::parse();
    telemetry::init(config.serve.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("agora-user failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: UserConfig) -> anyhow::Result<()> {
    if config.migrate_only {
        agora_user::open_database(&config).await?.close().await;
        tracing::info!("migrations applied");
        return Ok(());
    }
    let keys = UserKeys::load(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "agora-user listening");
    agora_user::serve(config, keys, listener, shutdown::signal()).await
}
