//! `agora`: the suite launcher (`cargo run`) and developer CLI.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod dev_keys;
mod probe;
mod suite;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors exit 1, not clap's 2: `agora health` keeps
        // grpc_health_probe's codes, where 2 means "connection failed".
        Err(error) if error.use_stderr() => {
            let _ = error.print();
            return ExitCode::from(probe::INVALID_ARGUMENTS);
        }
        Err(error) => error.exit(),
    };
    agora_interceptors::telemetry::init(cli.log_format);
    match cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("agora: {error:#}");
            ExitCode::FAILURE
        }
    }
}
