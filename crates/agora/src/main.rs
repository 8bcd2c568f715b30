//! `agora`: the suite launcher (`cargo run`) and developer CLI.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod dev_keys;
mod probe;
mod suite;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    agora_interceptors::telemetry::init(cli.log_format);
    match cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("agora: {error:#}");
            ExitCode::FAILURE
        }
    }
}
