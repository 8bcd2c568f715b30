//! Agora's payment context: charges and refunds that happen exactly once per
//! idempotency key, behind a [`provider::PaymentProvider`] trait, recorded
//! before the provider is called so no crash can charge twice.
//!
//! - [`domain`]: parsed value types (ids, money, keys, states).
//! - [`provider`]: the provider trait; [`gateway`]: the shipped test gateway;
//!   [`provider_metrics`]: its answers counted (`agora_payments_total`).
//! - [`engine`]: the record → call → record protocol, retries and waiting.
//! - [`reconciler`]: re-drives PENDING rows nobody is driving.
//! - [`store`]: the tables; [`events`]: the payment events (captured,
//!   failed, refunded) in their wire form, written to the outbox by the store.
//! - [`grpc`]: the `agora.payment.v1.PaymentService` adapter and its policy.
//! - [`config`]: flags and environment variables.
#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod events;
pub mod gateway;
pub mod grpc;
pub mod provider;
pub mod provider_metrics;
pub mod reconciler;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agora_interceptors::auth::{ServiceKeys, TokenVerifier};
use agora_interceptors::binary::{ServiceBinary, Settings, Shutdown};
use agora_interceptors::db::Migrations;
use agora_interceptors::{ServiceHost, grpc_server};
use tokio::net::TcpListener;

pub use config::PaymentConfig;
pub use gateway::TestGateway;
pub use provider::PaymentProvider;

/// The payment service's schema, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: sqlx::migrate!("../../migrations/payment/sqlite"),
    postgres: sqlx::migrate!("../../migrations/payment/postgres"),
};

/// The subject of the payment service's own `service`-role tokens (it reads
/// the user service's revocation list with them).
pub const SERVICE_SUBJECT: &str = "agora-payment";

/// Serves the payment service on `listener` until `shutdown` resolves, with
/// the shipped test gateway as its provider (`tok_slow` delayed by
/// `config.slow_delay`).
pub async fn serve(
    config: PaymentConfig,
    keys: ServiceKeys,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let gateway = Arc::new(TestGateway::new(config.slow_delay));
    serve_with_provider(config, keys, gateway, listener, shutdown).await
}

/// Serves the payment service with `provider` behind it: a real gateway's
/// adapter, or a test double that fails on purpose.
///
/// On shutdown: the reconciler stops, the server drains, and provider
/// attempts in flight get the rest of the grace period to finish and be
/// recorded; anything still running then is stopped (its row stays PENDING,
/// completed by the next retry or the reconciler). If this future is dropped
/// instead (a crash, as tests simulate), attempts stop at once the same way.
pub async fn serve_with_provider(
    config: PaymentConfig,
    keys: ServiceKeys,
    provider: Arc<dyn PaymentProvider>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let database = config.database.open("payment", &MIGRATIONS).await?;
    let token_settings = config.serve.token_settings();
    let verifier = TokenVerifier::new(keys.verifying.clone(), &token_settings);
    let credentials = keys.tokens(token_settings, SERVICE_SUBJECT)?;
    let host = ServiceHost::new(config.serve.clone(), verifier)
        .follow_user_service(credentials, config.downstream_tls.load()?)?;
    let provider = Arc::new(provider_metrics::CountedProvider::new(
        provider,
        &host.grpc_metrics(),
    ));
    let store = store::PaymentStore::new(database.clone());
    let outbox = store.outbox().clone();
    let engine = engine::PaymentEngine::new(
        store,
        provider,
        engine::EngineSettings {
            provider_timeout: config.provider_timeout,
        },
    );
    let reconcile_interval = config.reconcile_interval;
    let attempts = engine.clone();
    host.add_service(
        grpc_server!(
            grpc::Server::new(grpc::PaymentApi::new(engine)),
            config.serve
        ),
        &grpc::POLICY,
    )
    .outbox(outbox)
    .database(database)
    .background("provider attempts", move |stop| async move {
        // However this task ends (drained, out of grace, or dropped with
        // a crashed server), every attempt still running stops there.
        let _stop_attempts = attempts.stop_token().drop_guard();
        if reconcile_interval.is_zero() {
            stop.cancelled().await;
        } else {
            reconciler::run(attempts.clone(), reconcile_interval, stop).await;
        }
        // The host bounds this wait by what is left of the grace period.
        attempts.drain(Duration::MAX).await;
    })
    .serve(listener, shutdown)
    .await
}

impl ServiceBinary for PaymentConfig {
    const BINARY: &'static str = "agora-payment";
    const SERVICE: &'static str = "payment";

    const MIGRATIONS: &'static Migrations = &MIGRATIONS;

    fn settings(&self) -> Settings<'_> {
        Settings {
            listen: self.listen,
            serve: &self.serve,
            database: &self.database,
        }
    }

    async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let keys =
            self.service_key
                .load(Self::SERVICE, self.serve.key_set()?, "the user service")?;
        serve(self, keys, listener, shutdown).await
    }
}
