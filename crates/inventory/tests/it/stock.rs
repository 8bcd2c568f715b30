//! AdjustStock: signed deltas, idempotency by request id, the audit trail,
//! and the floor set by reserved units.

use agora_proto::inventory::v1 as pb;
use agora_testkit::status::{precondition_violations, reason, violated_fields};
use agora_testkit::{backend_test, with_token};
use sqlx::Row;
use tonic::Code;

use crate::support::{order_id, spawn_app};

backend_test! {
    async fn adjustments_apply_once_per_request_id_and_are_audited(db: &TestDatabase) {
        let app = spawn_app(db).await;
        app.product("SKU-TEE", 2500, 0).await;

        let first = uuid::Uuid::now_v7().to_string();
        let product = app.adjust_with("SKU-TEE", 10, &first).await.unwrap();
        assert_eq!((product.on_hand, product.reserved, product.available), (10, 0, 10));

        // The same request again: the product as it is now, nothing applied twice.
        let repeat = app.adjust_with("SKU-TEE", 10, &first).await.unwrap();
        assert_eq!(repeat.on_hand, 10);

        // A negative delta with its own request id.
        let second = uuid::Uuid::now_v7().to_string();
        assert_eq!(app.adjust_with("SKU-TEE", -4, &second).await.unwrap().on_hand, 6);
        // Repeating it still answers success, even though applying it again
        // now would change the result.
        assert_eq!(app.adjust_with("SKU-TEE", -4, &second).await.unwrap().on_hand, 6);

        // The request id of another adjustment cannot be reused.
        let reused = app.adjust_with("SKU-TEE", 5, &first).await.unwrap_err();
        assert_eq!(reused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&reused), "REQUEST_ID_REUSED");
        assert_eq!(app.get_product("SKU-TEE").await.on_hand, 6);

        // One audit row per applied adjustment, with its reason and actor.
        let database = app.database().await;
        let rows = sqlx::query(
            "SELECT request_id, delta, reason, actor FROM stock_adjustments \
             WHERE sku = $1 ORDER BY created_at",
        )
        .bind("SKU-TEE")
        .fetch_all(database.pool())
        .await
        .unwrap();
        let audit: Vec<(String, i64, String, String)> = rows
            .iter()
            .map(|row| {
                (
                    row.get("request_id"),
                    row.get("delta"),
                    row.get("reason"),
                    row.get("actor"),
                )
            })
            .collect();
        assert_eq!(
            audit,
            [
                (first, 10, "test adjustment".to_owned(), "test-admin".to_owned()),
                (second, -4, "test adjustment".to_owned(), "test-admin".to_owned()),
            ]
        );
        database.close().await;
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn on_hand_never_falls_below_reserved(db: &TestDatabase) {
        let app = spawn_app(db).await;
        app.product("SKU-MUG", 1200, 10).await;
        app.reserve(&order_id(), &[("SKU-MUG", 7)]).await.unwrap();

        // 10 on hand, 7 reserved: removing 4 would leave 6 < 7.
        let refused_id = uuid::Uuid::now_v7().to_string();
        let refused = app.adjust_with("SKU-MUG", -4, &refused_id).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&refused), "STOCK_BELOW_RESERVED");
        let violations = precondition_violations(&refused);
        assert_eq!(violations.len(), 1);
        assert_eq!((violations[0].0.as_str(), violations[0].1.as_str()), ("STOCK", "SKU-MUG"));
        let product = app.get_product("SKU-MUG").await;
        assert_eq!((product.on_hand, product.reserved, product.available), (10, 7, 3));

        // Removing exactly the available units is fine.
        let product = app.adjust("SKU-MUG", -3).await.unwrap();
        assert_eq!((product.on_hand, product.reserved, product.available), (7, 7, 0));
        // A refused request id was not consumed: once stock allows, it applies.
        app.adjust("SKU-MUG", 10).await.unwrap();
        let product = app.adjust_with("SKU-MUG", -4, &refused_id).await.unwrap();
        assert_eq!(product.on_hand, 13);

        // Nothing was audited for the refusal (three stockings/removals + the
        // retried request).
        let database = app.database().await;
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM stock_adjustments WHERE sku = $1")
            .bind("SKU-MUG")
            .fetch_one(database.pool())
            .await
            .unwrap()
            .get("n");
        assert_eq!(count, 4);
        database.close().await;
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn bad_adjustments_are_rejected(db: &TestDatabase) {
        let app = spawn_app(db).await;
        app.product("SKU-A", 100, 0).await;
        let mut client = app.client.clone();
        let status = client
            .adjust_stock(with_token(
                pb::AdjustStockRequest {
                    sku: "bad sku".into(),
                    delta: 0,
                    reason: " ".into(),
                    request_id: "not-a-uuid".into(),
                },
                &app.admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["sku", "delta", "reason", "request_id"]);

        let too_big = app.adjust("SKU-A", 1_000_000_001).await.unwrap_err();
        assert_eq!(violated_fields(&too_big), ["delta"]);

        // Unknown sku: NOT_FOUND, and nothing audited.
        let unknown = app.adjust("SKU-NOPE", 5).await.unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);
        assert_eq!(reason(&unknown), "PRODUCT_NOT_FOUND");

        // Below zero on an empty product.
        let negative = app.adjust("SKU-A", -1).await.unwrap_err();
        assert_eq!(negative.code(), Code::FailedPrecondition);
        assert_eq!(reason(&negative), "STOCK_BELOW_RESERVED");

        // Past the on-hand ceiling (set just below it directly: a thousand
        // maximal adjustments would only slow the test down).
        let database = app.database().await;
        sqlx::query("UPDATE products SET on_hand = $1 WHERE sku = $2")
            .bind(999_999_999_999_i64)
            .bind("SKU-A")
            .execute(database.pool())
            .await
            .unwrap();
        database.close().await;
        assert_eq!(app.adjust("SKU-A", 1).await.unwrap().on_hand, 1_000_000_000_000);
        let over = app.adjust("SKU-A", 1).await.unwrap_err();
        assert_eq!(over.code(), Code::FailedPrecondition);
        assert_eq!(reason(&over), "STOCK_LIMIT_EXCEEDED");
        assert_eq!(app.get_product("SKU-A").await.on_hand, 1_000_000_000_000);
        app.stop().await.unwrap();
    }
}
