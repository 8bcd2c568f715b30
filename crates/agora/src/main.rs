//! `agora`: the suite launcher (`cargo run`) and developer CLI.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod dev_keys;
mod suite;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    agora_interceptors::telemetry::init(cli.log_format);
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agora: {error:#}");
            ExitCode::FAILURE
        }
    }
}
