//! Products low on stock on the inventory service's /metrics.

use std::time::Duration;

use agora_interceptors::config::PreboundListener;
use agora_testkit::{TestDatabase, eventually, http_get, sample};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_with_five_units_or_fewer_available_are_low_on_stock() {
    let db = TestDatabase::sqlite();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = listener.local_addr().unwrap();
    let app = spawn_with(&db, |config| {
        config.serve.metrics_prebound = PreboundListener::new(listener);
    })
    .await;
    app.product("SKU-PLENTY", 100, 50).await;
    app.product("SKU-FEW", 100, 5).await;
    app.product("SKU-NONE", 100, 0).await;
    // Holding 45 of the 50 leaves 5 available: low too.
    app.product("SKU-HELD", 100, 50).await;
    app.reserve(&order_id(), &[("SKU-HELD", 45)]).await.unwrap();

    // The gauge is refreshed every few seconds from the database.
    let low = eventually(
        "three products low on stock",
        Duration::from_secs(15),
        || async {
            let (_, _, text) = http_get(metrics, "/metrics").await;
            let low = sample(&text, "agora_inventory_low_stock_products", "");
            (low == Some(3.0)).then_some(low)
        },
    )
    .await;
    assert_eq!(low, Some(3.0));
    app.stop().await.unwrap();
    db.cleanup().await;
}
