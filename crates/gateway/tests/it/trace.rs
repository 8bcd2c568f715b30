//! A call through the gateway is one trace: the caller's `traceparent` goes
//! on through the gateway's span into the service, and on into the saga's
//! calls, exported over OTLP to an in-process collector.

use agora_interceptors::telemetry::flush_traces;
use agora_testkit::otlp::{SpanKind, collector};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;

use crate::support::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_over_json_is_one_trace_through_the_gateway() {
    // Before the servers start: their trace layers take the provider then.
    let collector = collector();
    let harness = Harness::start().await;
    harness.suite.product("SKU-GW-TRACE", 700, 5).await;
    let gateway = &harness.gateway;
    let body = json!({"email": "trace@example.com", "displayName": "Tracer", "password": "correct horse battery"});
    assert_eq!(
        gateway.post("/v1/users", None, &body).await.status,
        StatusCode::OK
    );
    let signed_in = gateway
        .post(
            "/v1/users:authenticate",
            None,
            &json!({"email": "trace@example.com", "password": "correct horse battery"}),
        )
        .await;
    let token = signed_in.json()["accessToken"].as_str().unwrap().to_owned();

    let trace_id = uuid::Uuid::now_v7().simple().to_string();
    let upstream = trace_id[16..].to_owned();
    let traceparent = format!("00-{trace_id}-{upstream}-01");
    let order = json!({"lines": [{"sku": "SKU-GW-TRACE", "quantity": 1}], "paymentMethodToken": "tok_visa", "requestId": uuid::Uuid::now_v7().to_string()});
    let placed = gateway
        .send(
            Method::POST,
            "/v1/orders",
            Some(&token),
            Some(Bytes::from(order.to_string())),
            &[("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(placed.status, StatusCode::OK, "{:?}", placed.json());

    flush_traces().await;
    let spans = collector.spans_of(&trace_id);
    let name = "agora.order.v1.OrderService/PlaceOrder";
    let at_gateway = spans
        .iter()
        .find(|span| {
            span.kind == SpanKind::Server && span.name == name && span.parent_span_id == upstream
        })
        .unwrap_or_else(|| panic!("the gateway's span continues the caller's trace: {spans:#?}"));
    let call = spans
        .iter()
        .find(|span| {
            span.kind == SpanKind::Client
                && span.name == name
                && span.parent_span_id == at_gateway.span_id
        })
        .unwrap_or_else(|| panic!("the gateway's call to order: {spans:#?}"));
    let served = spans
        .iter()
        .find(|span| {
            span.kind == SpanKind::Server
                && span.name == name
                && span.parent_span_id == call.span_id
        })
        .unwrap_or_else(|| panic!("order serves it in the same trace: {spans:#?}"));
    assert!(
        spans
            .iter()
            .any(|span| span.name == "agora.payment.v1.PaymentService/Charge"),
        "the saga's calls are in the same trace: {spans:#?}"
    );
    assert_eq!(served.service_name, "agora-order");
}
