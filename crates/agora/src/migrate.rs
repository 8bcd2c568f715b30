//! `agora migrate`: applies one service's migrations to a database, the same
//! ones the service applies at start-up (and its `--migrate-only` flag).
//! For setting up a PostgreSQL database by hand or from a deployment job.

use agora_interceptors::db::{Database, PoolSettings};
use sqlx::Row;

use crate::suite::Service;

/// Applies `service`'s pending migrations to `database_url` and lists what
/// the database now has, one line per migration.
pub async fn run(service: Service, database_url: &str) -> anyhow::Result<Vec<String>> {
    let database = open(service, database_url).await?;
    let rows = sqlx::query(
        "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(database.pool())
    .await;
    database.close().await;
    let lines = rows?
        .iter()
        .map(|row| {
            let version: i64 = row.try_get("version")?;
            let description: String = row.try_get("description")?;
            Ok(format!("{version} {description}"))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(lines)
}

/// Connects and applies `service`'s migrations.
async fn open(service: Service, database_url: &str) -> anyhow::Result<Database> {
    let migrations = match service {
        Service::User => &agora_user::MIGRATIONS,
        Service::Order => &agora_order::MIGRATIONS,
        Service::Payment => &agora_payment::MIGRATIONS,
        Service::Inventory => &agora_inventory::MIGRATIONS,
        Service::Notification => &agora_notification::MIGRATIONS,
    };
    Database::open(database_url, &PoolSettings::default(), migrations).await
}
