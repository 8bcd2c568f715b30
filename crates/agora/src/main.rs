//! `agora`: the suite launcher (`cargo run`) and developer CLI.

use std::process::ExitCode;

use agora::{cli, probe};
use clap::Parser;

fn main() -> ExitCode {
    // Before any thread or allocation worth keeping: may re-execute the binary.
    agora_interceptors::memory::return_freed_memory();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("agora: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
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
    // The demo and the load generator print their own story; the in-process
    // suite they may start logs only warnings unless RUST_LOG says otherwise.
    let default_filter = match cli.command {
        Some(cli::Command::Demo { .. } | cli::Command::Load(_)) => "warn",
        _ => agora_interceptors::telemetry::DEFAULT_FILTER,
    };
    agora_interceptors::telemetry::init_with_filter(cli.log_format, default_filter);
    match cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("agora: {error:#}");
            ExitCode::FAILURE
        }
    }
}
