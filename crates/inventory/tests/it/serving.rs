//! What the inventory server offers besides its API: health and reflection,
//! the demo catalogue, and a clean shutdown with its sweeper.

use std::time::Duration;

use agora_inventory::{InventoryConfig, seed_demo_catalog};
use agora_proto::inventory::v1 as pb;
use agora_testkit::{assert_served, backend_test};
use sqlx::Row;

use crate::support::{INVENTORY_SERVICE, spawn_app, spawn_with};

backend_test! {
    async fn health_and_reflection_cover_the_inventory_service(db: &TestDatabase) {
        let app = spawn_app(db).await;
        assert_served(app.channel(), INVENTORY_SERVICE).await;
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn the_demo_catalogue_is_seeded_once(db: &TestDatabase) {
        let app = spawn_with(db, |config| config.seed_demo = true).await;
        let products = app
            .client
            .clone()
            .list_products(pb::ListProductsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .products;
        let skus: Vec<_> = products.iter().map(|p| p.sku.as_str()).collect();
        assert_eq!(skus, ["SKU-HOODIE", "SKU-MUG", "SKU-NOTEBOOK", "SKU-STICKERS", "SKU-TEE"]);
        assert!(products.iter().all(|p| p.on_hand > 0 && p.reserved == 0));
        assert!(products.iter().all(|p| p.price.as_ref().unwrap().currency_code == "EUR"));
        let mug = app.get_product("SKU-MUG").await;
        assert_eq!(mug.on_hand, 100);

        // Sell a mug, then seed again (as a restart would): nothing is added
        // or restocked twice.
        let order = crate::support::order_id();
        app.reserve(&order, &[("SKU-MUG", 1)]).await.unwrap();
        app.commit(&order).await.unwrap();
        let database = app.database().await;
        seed_demo_catalog(&database).await.unwrap();
        seed_demo_catalog(&database).await.unwrap();
        assert_eq!(app.get_product("SKU-MUG").await.on_hand, 99);
        let adjustments: i64 = sqlx::query("SELECT COUNT(*) AS n FROM stock_adjustments")
            .fetch_one(database.pool())
            .await
            .unwrap()
            .get("n");
        assert_eq!(adjustments, 5, "one audited initial stocking per demo product");
        database.close().await;
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn migrate_only_databases_serve_and_shutdown_is_clean(db: &TestDatabase) {
        // Opening twice applies migrations once and is harmless.
        let mut config = InventoryConfig::defaults();
        config.database.database_url = Some(db.url().to_owned());
        let open = || config.database.open("inventory", &agora_inventory::MIGRATIONS);
        open().await.unwrap().close().await;
        open().await.unwrap().close().await;

        let app = spawn_with(db, |config| {
            config.serve.shutdown_grace = Duration::from_secs(2);
            config.reservation_sweep_interval = Duration::from_millis(10);
        })
        .await;
        app.product("SKU-A", 100, 1).await;
        // The sweeper stops with the server: stop() returns (it would hang
        // past the grace period otherwise, and the task is awaited).
        let started = std::time::Instant::now();
        app.stop().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
