//! The README's walkthrough over HTTP/JSON: register, sign in, list
//! products, place an order, follow it by Server-Sent Events, cancel it.

use http::StatusCode;
use serde_json::json;

use crate::support::Harness;

#[tokio::test]
async fn register_sign_in_order_follow_and_cancel_over_json() {
    let harness = Harness::start().await;
    let gateway = &harness.gateway;
    harness.suite.product("SKU-GW-MUG", 1250, 10).await;

    let created = gateway
        .post(
            "/v1/users",
            None,
            &json!({"email": "walk@example.com", "displayName": "Walker", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.json());
    let user = created.json()["user"].clone();
    assert_eq!(user["email"], "walk@example.com");
    assert!(created.headers.contains_key("x-request-id"));

    // Proto field names are accepted as well as the JSON names.
    let signed_in = gateway
        .post(
            "/v1/users:authenticate",
            None,
            &json!({"email": "walk@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(signed_in.status, StatusCode::OK, "{:?}", signed_in.json());
    let token = signed_in.json()["accessToken"].as_str().unwrap().to_owned();
    assert!(
        signed_in.json()["expireTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let products = gateway.get("/v1/products?page_size=10", None).await;
    assert_eq!(products.status, StatusCode::OK);
    let listed = products.json();
    let mug = listed["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|product| product["sku"] == "SKU-GW-MUG")
        .cloned()
        .expect("the product is listed");
    // 64-bit integers are strings in the proto3 JSON mapping.
    assert_eq!(mug["available"], "10");
    assert_eq!(mug["price"]["amountMinor"], "1250");

    let one = gateway.get("/v1/products/SKU-GW-MUG", None).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["product"]["sku"], "SKU-GW-MUG");

    let placed = gateway
        .post(
            "/v1/orders",
            Some(&token),
            &json!({
                "lines": [{"sku": "SKU-GW-MUG", "quantity": "2"}],
                "payment_method_token": "tok_visa",
                "requestId": uuid::Uuid::now_v7().to_string(),
            }),
        )
        .await;
    assert_eq!(placed.status, StatusCode::OK, "{:?}", placed.json());
    let order_id = placed.json()["order"]["orderId"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, events) = gateway
        .events(&format!("/v1/orders/{order_id}:watch"), &token)
        .await;
    assert_eq!(status, StatusCode::OK);
    let last = events.last().expect("at least one event");
    assert_eq!(last.0, "message");
    assert_eq!(
        last.1["order"]["state"], "ORDER_STATE_CONFIRMED",
        "{events:?}"
    );

    let cancelled = gateway
        .post(
            &format!("/v1/orders/{order_id}:cancel"),
            Some(&token),
            &json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.json());
    let state = cancelled.json()["order"]["state"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        state == "ORDER_STATE_CANCELLED" || state == "ORDER_STATE_CANCELLING",
        "{state}"
    );

    let mine = gateway.get("/v1/orders", Some(&token)).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.json()["orders"][0]["orderId"], order_id.as_str());
}
