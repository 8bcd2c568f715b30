//! `agora migrate`: applies one service's migrations to a database, the same
//! ones the service applies at start-up (and its `--migrate-only` flag).
//! For setting up a PostgreSQL database by hand or from a deployment job.

use agora_interceptors::db::Database;
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

/// Connects with `service`'s own settings and migrations.
async fn open(service: Service, database_url: &str) -> anyhow::Result<Database> {
    let url = database_url.to_owned();
    match service {
        Service::User => {
            let mut config = agora_user::UserConfig::defaults();
            config.database_url = url;
            agora_user::open_database(&config).await
        }
        Service::Order => {
            let mut config = agora_order::OrderConfig::defaults();
            config.database_url = url;
            agora_order::open_database(&config).await
        }
        Service::Payment => {
            let mut config = agora_payment::PaymentConfig::defaults();
            config.database_url = url;
            agora_payment::open_database(&config).await
        }
        Service::Inventory => {
            let mut config = agora_inventory::InventoryConfig::defaults();
            config.database_url = url;
            agora_inventory::open_database(&config).await
        }
    }
}
