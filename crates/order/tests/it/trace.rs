//! One PlaceOrder is one trace: the caller's trace goes on through the order
//! service (its handler and its saga's own task) into user, inventory and
//! payment, exported over OTLP to an in-process collector.

use agora_interceptors::telemetry::flush_traces;
use agora_proto::order::v1 as pb;
use agora_testkit::otlp::{CollectedSpan, SpanKind, collector};
use agora_testkit::{TestDatabase, with_token};

use crate::suite::{Suite, SuiteOptions};
use crate::support::*;

fn one<'a>(spans: &'a [CollectedSpan], kind: SpanKind, name: &str) -> &'a CollectedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|span| span.kind == kind && span.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {kind:?} {name} span in {spans:#?}"
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_place_order_is_one_trace_across_order_inventory_and_payment() {
    // Before the servers start: their trace layers take the provider then.
    let collector = collector();
    let db = TestDatabase::sqlite();
    let suite = Suite::start(&db, SuiteOptions::default()).await;
    suite.product("MUG", 1200, 10).await;
    let (_, token) = customer(&suite.user, "ada@example.com").await;

    let trace_id = uuid::Uuid::now_v7().simple().to_string();
    let upstream = trace_id[16..].to_owned();
    let mut request = with_token(place_request(vec![line("MUG", 1)], "tok_visa"), &token);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{upstream}-01").parse().unwrap(),
    );
    let order = suite
        .orders()
        .place_order(request)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.state(), pb::OrderState::Confirmed);

    flush_traces().await;
    let spans = collector.spans_of(&trace_id);
    let place = one(
        &spans,
        SpanKind::Server,
        "agora.order.v1.OrderService/PlaceOrder",
    );
    assert_eq!(
        place.parent_span_id, upstream,
        "continues the caller's trace"
    );
    // Each service under its own name, though all run in this process.
    assert_eq!(place.service_name, "agora-order");
    for method in [
        "agora.user.v1.UserService/GetUser",
        "agora.inventory.v1.InventoryService/ReserveStock",
        "agora.payment.v1.PaymentService/Charge",
        "agora.inventory.v1.InventoryService/CommitReservation",
    ] {
        let call = one(&spans, SpanKind::Client, method);
        assert_eq!(
            call.parent_span_id, place.span_id,
            "{method} is made for PlaceOrder"
        );
        assert_eq!(call.service_name, "agora-order", "{method} is order's call");
        let served = one(&spans, SpanKind::Server, method);
        assert_eq!(
            served.parent_span_id, call.span_id,
            "{method} is served in the same trace"
        );
        assert_eq!(served.attributes["rpc.grpc.status_code"], "0");
        let callee = format!("agora-{}", method.split('.').nth(1).unwrap());
        assert_eq!(
            served.service_name, callee,
            "{method} is served by its service"
        );
    }
    suite.stop().await;
    db.cleanup().await;
}
