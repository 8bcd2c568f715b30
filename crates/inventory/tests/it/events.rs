//! Stock events on inventory's own feed: StockLow once per crossing of a
//! product's `low_stock_threshold`, a refused change with no event, and the
//! threshold kept and validated.

use std::time::Duration;

use agora_proto::events::v1 as ev;
use agora_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agora_proto::inventory::v1 as pb;
use agora_testkit::status::assert_invalid;
use agora_testkit::{backend_test, with_token};

use crate::support::*;

async fn events(app: &TestApp) -> Vec<ev::Event> {
    let mut stream = EventFeedServiceClient::new(app.channel())
        .subscribe(with_token(ev::SubscribeRequest::default(), &app.service))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(300), stream.message())
        .await
        .map(|m| m.unwrap())
    {
        got.push(message.event.unwrap());
    }
    got
}

fn kinds(events: &[ev::Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.r#type.trim_start_matches("agora.inventory."))
        .collect()
}

backend_test! {
    async fn stock_low_is_emitted_once_per_crossing_of_the_threshold(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let created = app
            .client
            .clone()
            .create_product(with_token(
                pb::CreateProductRequest {
                    product: Some(pb::Product {
                        sku: "MUG".into(),
                        name: "Mug".into(),
                        price: Some(money(1200, "EUR")),
                        low_stock_threshold: 5,
                        ..Default::default()
                    }),
                },
                &app.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap();
        assert_eq!(created.low_stock_threshold, 5);
        app.adjust("MUG", 10).await.unwrap();
        let first = order_id();
        app.reserve(&first, &[("MUG", 6)]).await.unwrap(); // 10 → 4: crosses
        let second = order_id();
        app.reserve(&second, &[("MUG", 1)]).await.unwrap(); // 4 → 3: already low
        // Refused (more than available): rolled back, no event at all.
        assert!(app.reserve(&order_id(), &[("MUG", 50)]).await.is_err());
        app.release(&first).await.unwrap(); // 3 → 9
        app.adjust("MUG", -5).await.unwrap(); // 9 → 4: crosses again
        app.commit(&second).await.unwrap();

        let got = events(&app).await;
        assert_eq!(
            kinds(&got),
            [
                "StockAdjusted", "StockReserved", "StockLow", "StockReserved",
                "StockReleased", "StockAdjusted", "StockLow", "StockCommitted"
            ]
        );
        let lows: Vec<_> = got
            .iter()
            .filter_map(|e| match &e.payload {
                Some(ev::event::Payload::StockLow(low)) => Some((low.available, low.threshold, e.sequence)),
                _ => None,
            })
            .collect();
        // The product's events are numbered 1, 2, 3, 4 (adjusted, low, adjusted, low).
        assert_eq!(lows, [(4, 5, 2), (4, 5, 4)]);
        assert_eq!(app.get_product("MUG").await.low_stock_threshold, 5);

        let status = app
            .client
            .clone()
            .create_product(with_token(
                pb::CreateProductRequest {
                    product: Some(pb::Product {
                        sku: "TEE".into(),
                        name: "Tee".into(),
                        price: Some(money(1200, "EUR")),
                        low_stock_threshold: -1,
                        ..Default::default()
                    }),
                },
                &app.admin,
            ))
            .await
            .unwrap_err();
        assert_invalid(&status, &["product.low_stock_threshold"]);
        app.stop().await.unwrap();
    }
}
