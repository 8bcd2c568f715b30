//! What the inventory server offers besides its API: health that follows the
//! database, reflection, the demo catalogue, and a clean shutdown.

use std::time::Duration;

use agora_inventory::{InventoryConfig, seed_demo_catalog};
use agora_proto::inventory::v1 as pb;
use agora_testkit::{TestDatabase, backend_test};
use sqlx::Row;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{INVENTORY_SERVICE, spawn_app, spawn_with};

backend_test! {
    async fn health_and_reflection_cover_the_inventory_service(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let mut health = HealthClient::new(app.channel());
        for service in ["", INVENTORY_SERVICE] {
            let status = health
                .check(HealthCheckRequest { service: service.into() })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }

        use tonic_reflection::pb::v1;
        let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel());
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut replies = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.next().await.unwrap().unwrap();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            reply.message_response
        else {
            panic!("unexpected reply {reply:?}");
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.contains(&INVENTORY_SERVICE.to_owned()), "{names:?}");
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

/// Readiness follows the database: dropped → NOT_SERVING, back → SERVING.
/// Only PostgreSQL can be taken away from under a running service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database_down_and_back_on_postgres() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let app = spawn_with(&db, |config| {
        config.serve.readiness_interval = Duration::from_millis(50);
        config.reservation_sweep_interval = Duration::from_millis(50);
    })
    .await;
    let mut health = HealthClient::new(app.channel());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: INVENTORY_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut next_status = async move || {
        tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a health change within 10 s")
            .unwrap()
            .unwrap()
            .status
    };
    assert_eq!(next_status().await, ServingStatus::Serving as i32);

    db.take_offline().await;
    assert_eq!(next_status().await, ServingStatus::NotServing as i32);
    db.bring_back().await;
    assert_eq!(next_status().await, ServingStatus::Serving as i32);
    app.stop().await.unwrap();
    db.cleanup().await;
}
