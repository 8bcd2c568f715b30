//! Agora's payment context: charges and refunds that happen exactly once per
//! idempotency key, behind a [`provider::PaymentProvider`] trait, recorded
//! before the provider is called so no crash can charge twice.
//!
//! - [`domain`]: parsed value types (ids, money, keys, states).
//! - [`provider`]: the provider trait; [`gateway`]: the shipped test gateway.
//! - [`engine`]: the record → call → record protocol, retries and waiting.
//! - [`reconciler`]: re-drives PENDING rows nobody is driving.
//! - [`store`]: the tables.
//! - [`grpc`]: the `agora.payment.v1.PaymentService` adapter and its policy.
//! - [`config`]: flags and environment variables.
#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod provider;
pub mod reconciler;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use agora_interceptors::ServiceHost;
use agora_interceptors::auth::{KeySet, TokenVerifier};
use agora_interceptors::db::{Database, PoolSettings};
use agora_proto::payment::v1::payment_service_server::PaymentServiceServer;

use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

pub use config::PaymentConfig;
pub use gateway::TestGateway;
pub use provider::PaymentProvider;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/payment/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/payment/postgres");

/// Connects to the database and applies pending migrations.
pub async fn open_database(config: &PaymentConfig) -> anyhow::Result<Database> {
    let settings = PoolSettings {
        max_connections: config.db_max_connections,
        ..PoolSettings::default()
    };
    let database = Database::connect(&config.database_url, &settings).await?;
    database
        .migrate(&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS)
        .await?;
    Ok(database)
}

/// Serves the payment service on `listener` until `shutdown` resolves, with
/// the shipped test gateway as its provider (`tok_slow` delayed by
/// `config.slow_delay`).
pub async fn serve(
    config: PaymentConfig,
    verifying: KeySet,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let gateway = Arc::new(TestGateway::new(config.slow_delay));
    serve_with_provider(config, verifying, gateway, listener, shutdown).await
}

/// Serves the payment service with `provider` behind it: a real gateway's
/// adapter, or a test double that fails on purpose.
///
/// On shutdown: the reconciler stops, the server drains, provider attempts in
/// flight get the rest of the grace period to finish and be recorded, then
/// anything still running is stopped (its row stays PENDING, completed by the
/// next retry or the reconciler). If this future is dropped instead (a crash,
/// as tests simulate), attempts stop at once the same way.
pub async fn serve_with_provider(
    config: PaymentConfig,
    verifying: KeySet,
    provider: Arc<dyn PaymentProvider>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let database = open_database(&config).await?;
    let verifier = TokenVerifier::new(verifying, &config.serve.token_settings());
    let engine = engine::PaymentEngine::new(
        store::PaymentStore::new(database.clone()),
        provider,
        engine::EngineSettings {
            provider_timeout: config.provider_timeout,
        },
    );
    // Dropping this (the future being dropped, or returning) stops every
    // attempt and the reconciler.
    let _stop_on_drop = engine.stop_token().drop_guard();

    let reconciler_stop = engine.stop_token().child_token();
    let reconciler = (!config.reconcile_interval.is_zero()).then(|| {
        tokio::spawn(reconciler::run(
            engine.clone(),
            config.reconcile_interval,
            reconciler_stop.clone(),
        ))
    });

    let metrics_listener = config.serve.bind_metrics().await?;
    let mut host = ServiceHost::new(config.serve.clone(), verifier)
        .add_service(
            PaymentServiceServer::new(grpc::PaymentApi::new(engine.clone()))
                .max_decoding_message_size(config.serve.max_request_bytes),
            &grpc::POLICY,
        )
        .readiness(database.clone());
    if let Some(listener) = metrics_listener {
        host = host.metrics(listener);
    }
    // Attempts get what is left of the grace period after the server drained,
    // so the whole shutdown stays within it.
    let shutdown_at = std::sync::OnceLock::new();
    let result = host
        .serve(listener, async {
            shutdown.await;
            let _ = shutdown_at.set(tokio::time::Instant::now());
        })
        .await;

    reconciler_stop.cancel();
    if let Some(reconciler) = reconciler {
        let _ = reconciler.await;
    }
    let left = shutdown_at.get().map_or(config.serve.shutdown_grace, |at| {
        config.serve.shutdown_grace.saturating_sub(at.elapsed())
    });
    engine.drain(left).await;
    database.close().await;
    result
}
