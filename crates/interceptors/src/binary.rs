//! What every service binary does, written once: parse its flags, start
//! logging and tracing, then either apply the migrations and exit
//! (`--migrate-only`, for a deployment's migration job) or bind its port and
//! serve until SIGTERM or Ctrl-C.
//!
//! A service's `main.rs` is one line:
//!
//! ```text
//! fn main() -> std::process::ExitCode {
//!     agora_interceptors::binary::main::<agora_user::UserConfig>()
//! }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::ServeArgs;
use crate::db::{DatabaseArgs, Migrations};
use crate::{shutdown, telemetry};

/// A service's configuration, and how to serve with it.
pub trait ServiceBinary: clap::Parser + Send + 'static {
    /// The binary's name, e.g. `agora-user`.
    const BINARY: &'static str;
    /// The service's short name, e.g. `user`: its default SQLite file is
    /// `data/<name>.db`.
    const SERVICE: &'static str;

    /// Where the gRPC server listens.
    fn listen(&self) -> SocketAddr;
    /// The settings every service shares.
    fn serve_args(&self) -> &ServeArgs;
    /// Its database flags.
    fn database_args(&self) -> &DatabaseArgs;
    /// Its migrations.
    fn migrations() -> &'static Migrations;
    /// Serves on `listener` until `shutdown` resolves.
    fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Runs the service binary `S` to completion; the process's exit code.
pub fn main<S: ServiceBinary>() -> ExitCode {
    let config = S::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{}: cannot start the async runtime: {error}", S::BINARY);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        telemetry::init(config.serve_args().log_format);
        match run(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{} failed: {error:#}", S::BINARY);
                ExitCode::FAILURE
            }
        }
    })
}

async fn run<S: ServiceBinary>(config: S) -> anyhow::Result<()> {
    if config.database_args().migrate_only {
        config
            .database_args()
            .open(S::SERVICE, S::migrations())
            .await?
            .close()
            .await;
        tracing::info!("migrations applied");
        return Ok(());
    }
    let address = config.listen();
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    tracing::info!(address = %listener.local_addr()?, "{} listening", S::BINARY);
    config.serve(listener, shutdown::signal()).await
}
