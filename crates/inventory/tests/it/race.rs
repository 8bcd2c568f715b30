//! Many callers at once: the last units are never oversold, and stock is
//! conserved whatever interleaving the database picks.

use std::collections::HashMap;
use std::time::Duration;

use agora_interceptors::db::Database;
use agora_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use agora_testkit::backend_test;
use agora_testkit::eventually;
use agora_testkit::status::reason;
use sqlx::Row;
use tonic::Code;

use crate::support::{TestApp, order_id, reserve_on, spawn_with};

/// Connections the racing calls are spread over, so they really arrive at
/// once rather than queueing on one HTTP/2 connection.
const CHANNELS: usize = 8;

backend_test! {
    async fn two_hundred_orders_race_for_fifty_units(db: &TestDatabase) {
        let app = spawn_with(db, |config| config.database.db_max_connections = 10).await;
        app.product("SKU-LAST", 700, 50).await;
        let clients: Vec<_> = (0..CHANNELS)
            .map(|_| InventoryServiceClient::new(app.channel()))
            .collect();

        // Every call is spawned before any is awaited; a barrier releases
        // them together.
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(200));
        let calls: Vec<_> = (0..200)
            .map(|i| {
                let mut client = clients[i % CHANNELS].clone();
                let token = app.service.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let order = order_id();
                    barrier.wait().await;
                    let result = reserve_on(&mut client, &token, &order, &[("SKU-LAST", 1)], None).await;
                    (order, result)
                })
            })
            .collect();
        let mut granted = Vec::new();
        let mut refused = 0;
        for call in calls {
            let (order, result) = call.await.unwrap();
            match result {
                Ok(reservation) => {
                    assert_eq!(reservation.total.unwrap().amount_minor, 700);
                    granted.push(order);
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                    assert_eq!(reason(&status), "INSUFFICIENT_STOCK");
                    refused += 1;
                }
            }
        }
        assert_eq!(granted.len(), 50, "exactly the available units are granted");
        assert_eq!(refused, 150);
        let product = app.get_product("SKU-LAST").await;
        assert_eq!((product.on_hand, product.reserved, product.available), (50, 50, 0));

        // Sell 20, drop 10: the counts and the ledger still agree.
        for order in &granted[..20] {
            app.commit(order).await.unwrap();
        }
        for order in &granted[20..30] {
            app.release(order).await.unwrap();
        }
        let product = app.get_product("SKU-LAST").await;
        assert_eq!((product.on_hand, product.reserved, product.available), (30, 20, 10));
        assert_stock_is_conserved(&app).await;
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn concurrent_repeats_of_one_order_hold_stock_once(db: &TestDatabase) {
        let app = spawn_with(db, |_| {}).await;
        app.product("SKU-A", 100, 10).await;
        app.product("SKU-B", 100, 10).await;
        let order = order_id();
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let mut client = InventoryServiceClient::new(app.channel());
                let token = app.service.clone();
                let order = order.clone();
                tokio::spawn(async move {
                    // The same lines, listed in either order.
                    let lines: &[(&str, i64)] = if i % 2 == 0 {
                        &[("SKU-A", 3), ("SKU-B", 1)]
                    } else {
                        &[("SKU-B", 1), ("SKU-A", 3)]
                    };
                    reserve_on(&mut client, &token, &order, lines, None).await
                })
            })
            .collect();
        let mut created = Vec::new();
        for call in calls {
            let reservation = call.await.unwrap().expect("every repeat succeeds");
            created.push(reservation.create_time.unwrap());
        }
        created.dedup();
        assert_eq!(created.len(), 1, "one reservation, returned to every caller");
        let product = app.get_product("SKU-A").await;
        assert_eq!((product.on_hand, product.reserved, product.available), (10, 3, 7));
        assert_eq!(app.get_product("SKU-B").await.reserved, 1);
        assert_stock_is_conserved(&app).await;
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn mixed_concurrent_traffic_keeps_every_invariant(db: &TestDatabase) {
        let app = spawn_with(db, |config| {
            // Admin adjustments race too; do not let the rate limit refuse them.
            config.serve.rate_limit_per_second = 0;
            config.reservation_sweep_interval = Duration::from_millis(20);
        })
        .await;
        for sku in ["SKU-A", "SKU-B", "SKU-C"] {
            app.product(sku, 100, 20).await;
        }
        // Each worker reserves two skus (listed in opposite orders by
        // neighbours, which would deadlock if rows were locked in request
        // order), then commits, releases, or commits and releases; some
        // holds are left to expire; an admin adds and removes stock.
        let pairs = [("SKU-A", "SKU-B"), ("SKU-B", "SKU-A"), ("SKU-C", "SKU-A"), ("SKU-B", "SKU-C")];
        let mut tasks = Vec::new();
        for i in 0..80usize {
            let mut client = InventoryServiceClient::new(app.channel());
            let token = app.service.clone();
            let (first, second) = pairs[i % pairs.len()];
            tasks.push(tokio::spawn(async move {
                let order = order_id();
                let ttl = (i % 5 == 4).then_some(Duration::from_millis(100));
                let lines = [(first, 1 + (i % 3) as i64), (second, 1)];
                if reserve_on(&mut client, &token, &order, &lines, ttl).await.is_err() {
                    return;
                }
                let commit = || agora_proto::inventory::v1::CommitReservationRequest { order_id: order.clone() };
                let release = || agora_proto::inventory::v1::ReleaseReservationRequest { order_id: order.clone() };
                match i % 5 {
                    0 | 1 => {
                        let _ = client.commit_reservation(agora_testkit::with_token(commit(), &token)).await;
                    }
                    2 => {
                        let _ = client.release_reservation(agora_testkit::with_token(release(), &token)).await;
                    }
                    3 => {
                        let _ = client.commit_reservation(agora_testkit::with_token(commit(), &token)).await;
                        let _ = client.release_reservation(agora_testkit::with_token(release(), &token)).await;
                    }
                    _ => {} // left to expire
                }
            }));
        }
        for i in 0..30i64 {
            let sku = ["SKU-A", "SKU-B", "SKU-C"][(i % 3) as usize];
            let delta = if i % 2 == 0 { 3 } else { -2 };
            let app_client = app.client.clone();
            let admin = app.admin.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = app_client;
                // May be refused (FAILED_PRECONDITION) when reserved units
                // leave too little on hand; either way the ledger must agree.
                let _ = client
                    .adjust_stock(agora_testkit::with_token(
                        agora_proto::inventory::v1::AdjustStockRequest {
                            sku: sku.into(),
                            delta,
                            reason: "racing adjustment".into(),
                            request_id: uuid::Uuid::now_v7().to_string(),
                        },
                        &admin,
                    ))
                    .await;
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // Let the short holds expire, so the sweeper is not moving stock
        // while the ledger is read.
        let database = app.database().await;
        eventually("the short holds are swept", Duration::from_secs(20), || async {
            let soon = agora_interceptors::api::time::now_micros() + 60_000_000;
            let due: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM reservations WHERE state = 'HELD' AND expires_at < $1",
            )
            .bind(soon)
            .fetch_one(database.pool())
            .await
            .unwrap()
            .get("n");
            (due == 0).then_some(())
        })
        .await;
        database.close().await;
        assert_stock_is_conserved(&app).await;
        app.stop().await.unwrap();
    }
}

/// For every product: `0 <= reserved <= on_hand`; `reserved` is what HELD
/// reservations hold; and stock is conserved: the sum of its adjustments
/// equals `on_hand` plus the units of COMMITTED (sold, not given back)
/// reservations.
async fn assert_stock_is_conserved(app: &TestApp) {
    let database = app.database().await;
    let held = sums_by_state(&database, "HELD").await;
    let sold = sums_by_state(&database, "COMMITTED").await;
    let adjusted: HashMap<String, i64> = sqlx::query(
        "SELECT sku, CAST(SUM(delta) AS BIGINT) AS total FROM stock_adjustments GROUP BY sku",
    )
    .fetch_all(database.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get("sku"), row.get("total")))
    .collect();
    let products = sqlx::query("SELECT sku FROM products")
        .fetch_all(database.pool())
        .await
        .unwrap();
    database.close().await;
    assert!(!products.is_empty());
    for row in products {
        let sku: String = row.get("sku");
        // Read through the API, as a client sees it.
        let product = app.get_product(&sku).await;
        assert!(0 <= product.reserved, "{product:?}");
        assert!(product.reserved <= product.on_hand, "{product:?}");
        assert_eq!(product.available, product.on_hand - product.reserved);
        let held = held.get(&sku).copied().unwrap_or(0);
        let sold = sold.get(&sku).copied().unwrap_or(0);
        let adjusted = adjusted.get(&sku).copied().unwrap_or(0);
        assert_eq!(
            product.reserved, held,
            "{sku}: reserved = units of HELD reservations"
        );
        assert_eq!(
            adjusted,
            product.on_hand + sold,
            "{sku}: adjustments = on hand + sold"
        );
    }
}

async fn sums_by_state(database: &Database, state: &str) -> HashMap<String, i64> {
    sqlx::query(
        "SELECT l.sku AS sku, CAST(SUM(l.quantity) AS BIGINT) AS total \
         FROM reservation_lines l JOIN reservations r ON r.order_id = l.order_id \
         WHERE r.state = $1 GROUP BY l.sku",
    )
    .bind(state.to_owned())
    .fetch_all(database.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get("sku"), row.get("total")))
    .collect()
}
