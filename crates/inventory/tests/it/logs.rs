//! The "stock adjusted" line keeps both ids apart: the call's own
//! `request_id` (x-request-id) and AdjustStock's idempotency key, logged as
//! `adjustment_request_id`; a JSON object never has a key twice.

use agora_proto::inventory::v1 as pb;
use agora_testkit::logs::capture;
use agora_testkit::{TestDatabase, with_token};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_adjusted_names_the_call_and_the_adjustment_once_each() {
    let logs = capture();
    let db = TestDatabase::sqlite();
    let app = spawn_app(&db).await;
    app.product("SKU-LOGS", 900, 0).await;

    let call_id = format!("call-{}", order_id());
    let adjustment = uuid::Uuid::now_v7().to_string();
    let mut request = with_token(
        pb::AdjustStockRequest {
            sku: "SKU-LOGS".into(),
            delta: 3,
            reason: "delivery".into(),
            request_id: adjustment.clone(),
        },
        &app.admin,
    );
    request
        .metadata_mut()
        .insert("x-request-id", call_id.parse().unwrap());
    app.client.clone().adjust_stock(request).await.unwrap();

    let line = logs.line_with(&["stock adjusted", &adjustment]).await;
    assert_eq!(line.matches("\"request_id\":").count(), 1, "{line}");
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["request_id"], call_id.as_str(), "{line}");
    assert_eq!(line["adjustment_request_id"], adjustment.as_str(), "{line}");
    app.stop().await.unwrap();
    db.cleanup().await;
}
