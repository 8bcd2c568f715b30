//! Stock an operator should act on, on the inventory service's `/metrics`:
//!
//! | metric | meaning |
//! | --- | --- |
//! | `agora_inventory_low_stock_products` | products whose available units (on hand less reserved) are at most [`LOW_STOCK_UNITS`] |
//!
//! Read from the database every few seconds (one `COUNT` over the
//! catalogue), so it also sees changes made by other replicas.

use std::time::Duration;

use agora_interceptors::db::Database;
use agora_interceptors::metrics::GrpcMetrics;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

/// A product with this many available units or fewer is low on stock.
pub const LOW_STOCK_UNITS: i64 = 5;

/// How often the gauge is refreshed.
const REFRESH: Duration = Duration::from_secs(5);

/// Registers the gauge with the service's metrics and keeps it current
/// until `stop`.
pub async fn watch_low_stock(database: Database, metrics: GrpcMetrics, stop: CancellationToken) {
    let low = Gauge::<i64>::default();
    metrics.register(
        "agora_inventory_low_stock_products",
        "Products whose available units (on hand less reserved) are 5 or fewer",
        low.clone(),
    );
    loop {
        let counted: Result<i64, sqlx::Error> =
            sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE on_hand - reserved <= $1")
                .bind(LOW_STOCK_UNITS)
                .fetch_one(database.pool())
                .await;
        match counted {
            Ok(count) => {
                low.set(count);
            }
            Err(error) => tracing::debug!(%error, "counting low-stock products failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REFRESH) => {}
        }
    }
}
