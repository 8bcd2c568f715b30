//! `agora-payment`: the payment service on its own, configured by flags and
//! environment.

use std::process::ExitCode;

use agora_interceptors::{shutdown, telemetry};
use agora_payment::PaymentConfig;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = PaymentConfig::parse();
    telemetry::init(config.serve.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("agora-payment failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: PaymentConfig) -> anyhow::Result<()> {
    if config.migrate_only {
        agora_payment::open_database(&config).await?.close().await;
        tracing::info!("migrations applied");
        return Ok(());
    }
    let verifying = config.serve.key_set()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "agora-payment listening");
    agora_payment::serve(config, verifying, listener, shutdown::signal()).await
}
