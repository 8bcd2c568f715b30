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
use std::pin::Pin;
use std::process::ExitCode;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::ServeArgs;
use crate::db::{DatabaseArgs, Migrations};
use crate::{shutdown, telemetry};

/// What a service binary is told to stop with: SIGTERM or Ctrl-C.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The settings of a service binary that this module reads.
#[derive(Clone, Copy, Debug)]
pub struct Settings<'a> {
    /// Where the gRPC server listens.
    pub listen: SocketAddr,
    /// The settings every service shares.
    pub serve: &'a ServeArgs,
    /// Its database flags.
    pub database: &'a DatabaseArgs,
}

/// A service's configuration, and how to serve with it.
pub trait ServiceBinary: clap::Parser + Send + 'static {
    /// The binary's name, e.g. `agora-user`.
    const BINARY: &'static str;
    /// The service's short name, e.g. `user`: its default SQLite file is
    /// `data/<name>.db`.
    const SERVICE: &'static str;
    /// Its migrations.
    const MIGRATIONS: &'static Migrations;

    /// Its address and shared settings.
    fn settings(&self) -> Settings<'_>;

    /// Serves on `listener` until `shutdown` resolves.
    fn serve(
        self,
        listener: TcpListener,
        shutdown: Shutdown,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Runs the service binary `S` to completion; the process's exit code.
pub fn main<S: ServiceBinary>() -> ExitCode {
    crate::memory::return_freed_memory();
    let config = S::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{}: cannot start the async runtime: {error}", S::BINARY);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        telemetry::init(config.settings().serve.log_format);
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
    let settings = config.settings();
    if settings.database.migrate_only {
        let database = settings.database.open(S::SERVICE, S::MIGRATIONS).await?;
        database.close().await;
        tracing::info!("migrations applied");
        return Ok(());
    }
    let address = settings.listen;
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    tracing::info!(address = %listener.local_addr()?, "{} listening", S::BINARY);
    config.serve(listener, Box::pin(shutdown::signal())).await
}
