//! gRPC statuses as HTTP answers: each code the services return mapped by
//! google.rpc.Code, with the google.rpc.Status (and its details) as JSON;
//! the gateway's own refusals (bad JSON, bad parameters, size, rate).

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;

use crate::support::{Harness, TestGateway, config_for};

#[tokio::test]
async fn service_errors_map_to_http_statuses_with_their_details() {
    let harness = Harness::start().await;
    let gateway = &harness.gateway;
    let customer = harness
        .suite
        .keys
        .customer_token("0190f0f0-0000-7000-8000-000000000001");

    // INVALID_ARGUMENT from the service, with its BadRequest.
    let invalid = gateway.get("/v1/products?pageSize=-1", None).await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert_eq!(invalid.json()["code"], 3);
    assert!(
        invalid
            .detail_types()
            .iter()
            .any(|t| t.ends_with("google.rpc.BadRequest")),
        "{:?}",
        invalid.json()
    );

    // NOT_FOUND.
    let missing = gateway.get("/v1/products/NO-SUCH-SKU", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["code"], 5);

    // ALREADY_EXISTS.
    let body = json!({"email": "twice@example.com", "displayName": "Twice", "password": "correct horse battery"});
    assert_eq!(
        gateway.post("/v1/users", None, &body).await.status,
        StatusCode::OK
    );
    let again = gateway.post("/v1/users", None, &body).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["code"], 6);

    // UNAUTHENTICATED: no token, and a wrong password.
    let anonymous = gateway.get("/v1/orders", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let wrong = gateway
        .post(
            "/v1/users:authenticate",
            None,
            &json!({"email": "twice@example.com", "password": "wrong password!"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["code"], 16);

    // PERMISSION_DENIED: a customer listing users.
    let denied = gateway.get("/v1/users", Some(&customer)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.json()["code"], 7);

    // FAILED_PRECONDITION: cancelling an order that failed (card declined).
    harness.suite.product("SKU-GW-TEE", 900, 5).await;
    let signed_in = gateway
        .post(
            "/v1/users:authenticate",
            None,
            &json!({"email": "twice@example.com", "password": "correct horse battery"}),
        )
        .await;
    let token = signed_in.json()["accessToken"].as_str().unwrap().to_owned();
    let placed = gateway
        .post(
            "/v1/orders",
            Some(&token),
            &json!({"lines": [{"sku": "SKU-GW-TEE", "quantity": 1}], "paymentMethodToken": "tok_declined", "requestId": uuid::Uuid::now_v7().to_string()}),
        )
        .await;
    assert_eq!(placed.status, StatusCode::OK, "{:?}", placed.json());
    let order = placed.json()["order"].clone();
    assert_eq!(order["state"], "ORDER_STATE_FAILED", "{order}");
    let refused = gateway
        .post(
            &format!("/v1/orders/{}:cancel", order["orderId"].as_str().unwrap()),
            Some(&token),
            &json!({}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.json()["code"], 9);
    assert_eq!(refused.reason(), "ORDER_NOT_CANCELLABLE");

    // DEADLINE_EXCEEDED: a deadline that has passed before the call.
    let late = gateway
        .send(
            Method::GET,
            "/v1/products",
            None,
            None,
            &[("grpc-timeout", "1n")],
        )
        .await;
    assert_eq!(late.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(late.json()["code"], 4);
}

#[tokio::test]
async fn bad_json_and_bad_parameters_are_400_with_field_violations() {
    let harness = Harness::start().await;
    let gateway = &harness.gateway;
    let token = harness.suite.keys.admin_token();

    let broken = gateway
        .send(
            Method::POST,
            "/v1/orders",
            Some(&token),
            Some(Bytes::from_static(b"{\"lines\": [")),
            &[],
        )
        .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert_eq!(broken.violated_fields(), ["body"]);

    let unknown = gateway
        .post("/v1/orders", Some(&token), &json!({"no_such_field": 1}))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.violated_fields(), ["body"]);

    let bad_query = gateway.get("/v1/products?page_size=many", None).await;
    assert_eq!(bad_query.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_query.violated_fields(), ["page_size"]);

    let unknown_query = gateway.get("/v1/products?colour=red", None).await;
    assert_eq!(unknown_query.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown_query.violated_fields(), ["colour"]);

    let bad_escape = gateway.get("/v1/products/%ZZ", None).await;
    assert!(
        bad_escape.status.is_client_error(),
        "{:?}",
        bad_escape.status
    );

    let no_route = gateway.get("/v1/nothing-here", None).await;
    assert_eq!(no_route.status, StatusCode::NOT_FOUND);
    let wrong_method = gateway
        .send(Method::DELETE, "/v1/products", None, None, &[])
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn limits_answer_413_429_and_503() {
    let harness = Harness::start_with(|config| {
        config.max_request_bytes = 64;
        config.rate_limit_per_second = 1;
        config.rate_limit_burst = 2;
    })
    .await;
    let gateway = &harness.gateway;

    let big = json!({"email": "x".repeat(100), "password": "y"});
    let too_large = gateway
        .post("/v1/users:authenticate", Some("caller-a"), &big)
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);

    let mut limited = None;
    for _ in 0..5 {
        let answer = gateway.get("/v1/products", Some("caller-b")).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(answer);
            break;
        }
    }
    let limited = limited.expect("the rate limit refuses a burst");
    assert_eq!(limited.json()["code"], 8);
    assert!(limited.headers.contains_key("retry-after"));
    assert!(
        limited
            .detail_types()
            .iter()
            .any(|t| t.ends_with("google.rpc.RetryInfo"))
    );

    // UNAVAILABLE: a service that does not answer.
    let mut config = config_for(&harness.suite);
    config.inventory_url = "http://127.0.0.1:9".to_owned();
    config.default_deadline = std::time::Duration::from_secs(3);
    let broken = TestGateway::start(config).await;
    let down = broken.get("/v1/products", None).await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        down.json()
    );
    assert_eq!(down.json()["code"], 14);
    let not_ready = broken.get("/readyz", None).await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
}
