//! Agora's order context: orders and the PlaceOrder saga.
//!
//! PlaceOrder records the order PENDING, then a durable, orchestrated saga
//! reserves stock (inventory), charges the total (payment), commits the
//! reservation and confirms the order; any failure compensates (refund,
//! release) and leaves the order FAILED with a reason. Every step is recorded
//! before and after it runs, so a restarted service resumes or compensates
//! every unfinished saga.
//!
//! - [`domain`]: parsed value types (ids, skus, quantities, carts, tokens).
//! - [`store`]: the `orders`, `order_lines` and `saga_steps` tables, and the
//!   per-order lease that serialises runners, recovery and cancellation.
//! - [`steps`]: the saga's vocabulary: phases, step kinds, the step log,
//!   prices.
//! - [`saga`]: the state machine, its runners and recovery loop, and the
//!   order use cases (place, cancel, watch); [`saga_metrics`]: what
//!   operators watch of it (`agora_orders_*`, `agora_saga_*`).
//! - [`downstream`]: calls to user, inventory and payment through the shared
//!   calling stack, with this service's own `service`-role credentials.
//! - [`events`]: the order events (placed, confirmed, failed, cancelled) in
//!   their wire form, written to the outbox by the store.
//! - [`grpc`]: the `agora.order.v1.OrderService` adapter and its access policy.
//! - [`config`]: flags and environment variables.
#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod downstream;
pub mod error;
pub mod events;
pub mod grpc;
pub mod saga;
pub mod saga_metrics;
pub mod steps;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agora_interceptors::auth::{ServiceKeys, TokenVerifier};
use agora_interceptors::binary::{ServiceBinary, Settings, Shutdown};
use agora_interceptors::client::ServiceTokens;
use agora_interceptors::db::Migrations;
use agora_interceptors::{ServiceHost, grpc_server};
use anyhow::Context;
use tokio::net::TcpListener;

pub use config::OrderConfig;
pub use saga::{FaultHook, FaultPoint};

/// The order service's schema, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: sqlx::migrate!("../../migrations/order/sqlite"),
    postgres: sqlx::migrate!("../../migrations/order/postgres"),
};

/// The subject of the order service's service tokens.
pub const SERVICE_SUBJECT: &str = "agora-order";

/// The order service's keys: the user service's public keys for incoming
/// calls, and its own key, signing the `service`-role tokens it sends user,
/// inventory and payment.
pub type OrderKeys = ServiceKeys;

/// Extra wiring for tests: a fault hook that stops saga runners abruptly.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Called at every [`FaultPoint`]; true stops the runner there as a crash
    /// would.
    pub fault: Option<FaultHook>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("fault", &self.fault.is_some())
            .finish()
    }
}

/// Serves the order service on `listener` until `shutdown` resolves, resuming
/// unfinished sagas at start-up and periodically.
pub async fn serve(
    config: OrderConfig,
    keys: OrderKeys,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_with(config, keys, ServeOptions::default(), listener, shutdown).await
}

/// [`serve`] with test wiring.
pub async fn serve_with(
    config: OrderConfig,
    keys: OrderKeys,
    options: ServeOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let database = config.database.open("order", &MIGRATIONS).await?;
    let token_settings = config.serve.token_settings();
    let verifier = TokenVerifier::new(keys.verifying, &token_settings);
    let credentials = Arc::new(
        ServiceTokens::new(
            &keys.service,
            token_settings,
            SERVICE_SUBJECT,
            config.service_token_ttl,
        )
        .context("service token settings")?,
    );

    let downstream_settings = config.downstream_settings()?;
    let host = ServiceHost::new(config.serve.clone(), verifier)
        .follow_user_service(credentials.clone(), downstream_settings.tls.clone())?;
    let downstreams =
        downstream::Downstreams::connect(&downstream_settings, credentials, &host.grpc_metrics())?;
    let store = store::OrderStore::new(database.clone());
    let outbox = store.outbox().clone();
    let saga_metrics = saga_metrics::SagaMetrics::register(&host.grpc_metrics());
    let saga = saga::Saga::new(
        store.clone(),
        downstreams.clone(),
        config.saga_settings(),
        options.fault,
        saga_metrics.clone(),
    );
    let api = grpc::OrderApi::new(
        store,
        saga.clone(),
        downstreams,
        config.check_account,
        config.watch_poll_interval,
    );
    host.add_service(
        grpc_server!(grpc::Server::new(api), config.serve),
        &grpc::POLICY,
    )
    .outbox(outbox)
    .database(database.clone())
    .background("unsettled orders gauge", move |stop| {
        saga_metrics.watch_unsettled(database, stop)
    })
    // Resumes unfinished sagas now and every recovery interval. When
    // shutdown begins, runners pause at their next step boundary (their
    // orders resume from the database later) and WatchOrder streams end, so
    // the drain is short.
    .background("saga runners", move |stop| async move {
        saga.start_recovery();
        stop.cancelled().await;
        saga.begin_shutdown();
        // The host bounds this wait by what is left of the grace period.
        saga.shutdown(Duration::MAX).await;
    })
    .serve(listener, shutdown)
    .await
}

impl ServiceBinary for OrderConfig {
    const BINARY: &'static str = "agora-order";
    const SERVICE: &'static str = "order";

    const MIGRATIONS: &'static Migrations = &MIGRATIONS;

    fn settings(&self) -> Settings<'_> {
        Settings {
            listen: self.listen,
            serve: &self.serve,
            database: &self.database,
        }
    }

    async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let keys = self.service_key.load(
            Self::SERVICE,
            self.serve.key_set()?,
            "user, inventory and payment",
        )?;
        serve(self, keys, listener, shutdown).await
    }
}
