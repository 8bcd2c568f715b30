//! Agora's inventory context: the product catalogue, stock adjustments with an
//! audit trail, and reservations for orders that never oversell, however many
//! orders race for the last unit.
//!
//! - [`domain`]: parsed value types (skus, prices, quantities, reservations).
//! - [`store`]: the tables, and how stock stays right under concurrency.
//! - [`grpc`]: the `agora.inventory.v1.InventoryService` adapter and its
//!   access policy.
//! - [`sweeper`]: the background task that releases expired holds.
//! - [`config`]: flags and environment variables.
#![forbid(unsafe_code)]

pub mod config;
mod currency;
pub mod demo;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod store;
pub mod sweeper;

use std::future::Future;

use agora_interceptors::ServiceHost;
use agora_interceptors::auth::{KeySet, TokenVerifier};
use agora_interceptors::db::{Database, PoolSettings};
use agora_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use anyhow::Context;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::InventoryConfig;
pub use demo::seed_demo_catalog;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/inventory/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/inventory/postgres");

/// Connects to the database and applies pending migrations.
pub async fn open_database(config: &InventoryConfig) -> anyhow::Result<Database> {
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

/// Serves the inventory service on `listener` until `shutdown` resolves,
/// with the reservation sweeper running beside it; seeds the demo catalogue
/// first when the configuration asks for it.
pub async fn serve(
    config: InventoryConfig,
    verifying: KeySet,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.reservation_sweep_interval.is_zero(),
        "the reservation sweep interval must be positive"
    );
    let database = open_database(&config).await?;
    if config.seed_demo {
        seed_demo_catalog(&database)
            .await
            .context("seeding the demo catalogue")?;
    }
    let verifier = TokenVerifier::new(verifying, &config.serve.token_settings());
    let reservations = store::Reservations::new(database.clone());
    let api = grpc::InventoryApi::new(
        store::Catalog::new(database.clone()),
        reservations.clone(),
        config.reservation_default_ttl,
        config.reservation_max_ttl,
    );

    let metrics_listener = config.serve.bind_metrics().await?;
    let mut host = ServiceHost::new(config.serve.clone(), verifier)
        .add_service(
            InventoryServiceServer::new(api)
                .max_decoding_message_size(config.serve.max_request_bytes),
            &grpc::POLICY,
        )
        .readiness(database.clone());
    if let Some(listener) = metrics_listener {
        host = host.metrics(listener);
    }

    // The sweeper stops when shutdown begins: a drain should not start new
    // work, and a hold that expires meanwhile is released by the next start
    // (or refused at commit).
    let stop_sweeper = CancellationToken::new();
    let sweeper = tokio::spawn(sweeper::run(
        reservations,
        config.reservation_sweep_interval,
        stop_sweeper.clone(),
    ));
    let shutdown = {
        let stop_sweeper = stop_sweeper.clone();
        async move {
            shutdown.await;
            stop_sweeper.cancel();
        }
    };
    let result = host.serve(listener, shutdown).await;
    stop_sweeper.cancel();
    if let Err(error) = sweeper.await {
        tracing::warn!(%error, "reservation sweeper task failed");
    }
    database.close().await;
    result
}
