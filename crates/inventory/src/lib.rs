//! Agora's inventory context: the product catalogue, stock adjustments with an
//! audit trail, and reservations for orders that never oversell, however many
//! orders race for the last unit.
//!
//! - [`domain`]: parsed value types (skus, prices, quantities, reservations).
//! - [`store`]: the tables, and how stock stays right under concurrency.
//! - [`grpc`]: the `agora.inventory.v1.InventoryService` adapter and its
//!   access policy.
//! - [`events`]: the stock events (reserved, committed, released, adjusted,
//!   low) in their wire form, written to the outbox by the store.
//! - [`sweeper`]: the background task that releases expired holds.
//! - [`stock_metrics`]: the low-stock gauge operators watch.
//! - [`config`]: flags and environment variables.
#![forbid(unsafe_code)]

pub mod config;
mod currency;
pub mod demo;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod stock_metrics;
pub mod store;
pub mod sweeper;

use std::future::Future;

use agora_interceptors::auth::{ServiceKeys, TokenVerifier};
use agora_interceptors::binary::{ServiceBinary, Settings, Shutdown};
use agora_interceptors::db::Migrations;
use agora_interceptors::outbox::Outbox;
use agora_interceptors::{ServiceHost, grpc_server};
use anyhow::Context;
use tokio::net::TcpListener;

pub use config::InventoryConfig;
pub use demo::seed_demo_catalog;

/// The inventory service's schema, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: sqlx::migrate!("../../migrations/inventory/sqlite"),
    postgres: sqlx::migrate!("../../migrations/inventory/postgres"),
};

/// The subject of the inventory service's own `service`-role tokens (it reads
/// the user service's revocation list with them).
pub const SERVICE_SUBJECT: &str = "agora-inventory";

/// Serves the inventory service on `listener` until `shutdown` resolves,
/// with the reservation sweeper running beside it; seeds the demo catalogue
/// first when the configuration asks for it.
pub async fn serve(
    config: InventoryConfig,
    keys: ServiceKeys,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.reservation_sweep_interval.is_zero(),
        "the reservation sweep interval must be positive"
    );
    let database = config.database.open("inventory", &MIGRATIONS).await?;
    if config.seed_demo {
        seed_demo_catalog(&database)
            .await
            .context("seeding the demo catalogue")?;
    }
    let token_settings = config.serve.token_settings();
    let verifier = TokenVerifier::new(keys.verifying.clone(), &token_settings);
    let credentials = keys.tokens(token_settings, SERVICE_SUBJECT)?;
    let outbox = Outbox::new(database.clone(), "inventory");
    let reservations = store::Reservations::new(database.clone(), outbox.clone());
    let api = grpc::InventoryApi::new(
        store::Catalog::new(database.clone(), outbox.clone()),
        reservations.clone(),
        config.reservation_default_ttl,
        config.reservation_max_ttl,
    );
    let sweep_interval = config.reservation_sweep_interval;
    let host = ServiceHost::new(config.serve.clone(), verifier)
        .follow_user_service(credentials, config.downstream_tls.load()?)?;
    let metrics = host.grpc_metrics();
    let stock_database = database.clone();
    host.add_service(
        grpc_server!(grpc::Server::new(api), config.serve),
        &grpc::POLICY,
    )
    .outbox(outbox)
    .database(database)
    // Stops when shutdown begins: a drain should not start new work, and
    // a hold that expires meanwhile is released by the next start (or
    // refused at commit).
    .background("reservation sweeper", move |stop| {
        sweeper::run(reservations, sweep_interval, stop)
    })
    .background("low stock gauge", move |stop| {
        stock_metrics::watch_low_stock(stock_database, metrics, stop)
    })
    .serve(listener, shutdown)
    .await
}

impl ServiceBinary for InventoryConfig {
    const BINARY: &'static str = "agora-inventory";
    const SERVICE: &'static str = "inventory";

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
