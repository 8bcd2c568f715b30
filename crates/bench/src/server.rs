//! The server side of a measurement: one stack serving [`crate::stub`] on a
//! runtime with one worker thread, run as its own process so its CPU time,
//! write system calls and memory can be read from /proc.

use std::path::PathBuf;

use agora_interceptors::auth::{KeySet, TokenSettings, TokenVerifier};
use agora_interceptors::telemetry::{self, LogFormat};
use agora_interceptors::transport::{KillSwitch, ServerIo};
use agora_interceptors::{ServeArgs, ServiceHost, shutdown};
use agora_proto::user::v1::user_service_server::UserServiceServer;
use futures::StreamExt as _;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::stub::{POLICY, Stub};

/// What serves the RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stack {
    /// tonic's `Server` with the service and nothing else, TCP_NODELAY on:
    /// the baseline every ratio is against.
    Tonic,
    /// The same bare tonic server on Agora's transport: accepted sockets
    /// wrapped in `ServerIo` with write coalescing. No layers.
    Coalesced,
    /// Agora's `ServiceHost` with write coalescing off: tracing (not
    /// exported), metrics (endpoint on), deadline, load shedding, JWT auth,
    /// per-principal rate limit, panic guard, health and reflection. Against
    /// `tonic`, the cost of the layers alone.
    FullUncoalesced,
    /// `ServiceHost` as every service runs it: all the layers, coalescing on.
    Full,
}

impl Stack {
    /// Every stack, baseline first.
    pub const ALL: [Stack; 4] = [
        Stack::Tonic,
        Stack::Coalesced,
        Stack::FullUncoalesced,
        Stack::Full,
    ];

    /// The name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Tonic => "tonic",
            Stack::Coalesced => "coalesced",
            Stack::FullUncoalesced => "full-uncoalesced",
            Stack::Full => "full",
        }
    }
}

/// Serves `stack` until SIGTERM, printing `listening <addr>` once bound.
pub fn run(stack: Stack, jwks: PathBuf) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Logs on, as in production (the parent discards them): the full
        // stack opens a log span per call, and that is part of its cost.
        telemetry::init(LogFormat::Json);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        match stack {
            Stack::Tonic => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                Server::builder()
                    .add_service(UserServiceServer::new(Stub))
                    .serve_with_incoming_shutdown(incoming, shutdown::signal())
                    .await?;
            }
            Stack::Coalesced => {
                let kill = KillSwitch::new();
                let incoming =
                    TcpIncoming::from(listener)
                        .with_nodelay(Some(true))
                        .map(move |accepted| {
                            accepted.map(|stream| ServerIo::new(stream, kill.clone(), true))
                        });
                Server::builder()
                    .add_service(UserServiceServer::new(Stub))
                    .serve_with_incoming_shutdown(incoming, shutdown::signal())
                    .await?;
            }
            Stack::FullUncoalesced | Stack::Full => {
                let settings = ServeArgs {
                    // Every call goes through the limiter, none is refused.
                    rate_limit_per_second: u32::MAX / 2,
                    rate_limit_burst: u32::MAX / 2,
                    write_coalescing: stack == Stack::Full,
                    ..ServeArgs::default()
                };
                let verifier =
                    TokenVerifier::new(KeySet::from_file(&jwks)?, &TokenSettings::default());
                let metrics = TcpListener::bind("127.0.0.1:0").await?;
                ServiceHost::new(settings, verifier)
                    .add_service(UserServiceServer::new(Stub), &POLICY)
                    .metrics(metrics)
                    .serve(listener, shutdown::signal())
                    .await?;
            }
        }
        Ok(())
    })
}
