//! The log lines of a charge and a refund name the call that caused them
//! (its trace id and request id), though the provider attempt runs on a
//! task of its own.

use agora_testkit::TestDatabase;
use agora_testkit::logs::capture;
use agora_testkit::with_token;

use crate::support::*;

/// `message` as the order service sends it, in the trace `trace_id`, with
/// `request_id`.
fn in_call<T>(app: &TestApp, message: T, trace_id: &str, request_id: &str) -> tonic::Request<T> {
    let mut request = with_token(message, &app.service_token());
    let traceparent = format!("00-{trace_id}-{}-01", &trace_id[16..]);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charge_and_refund_resolved_lines_carry_the_calls_ids() {
    let logs = capture();
    let db = TestDatabase::sqlite();
    let app = spawn_app(&db).await;

    let trace_id = uuid::Uuid::now_v7().simple().to_string();
    let request_id = format!("charge-call-{}", id());
    let payment = app
        .client
        .clone()
        .charge(in_call(
            &app,
            charge_request("tok_visa", 1500),
            &trace_id,
            &request_id,
        ))
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    let line = logs
        .line_with(&["charge resolved", &payment.payment_id])
        .await;
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
    assert_eq!(line["request_id"], request_id.as_str(), "{line}");

    let trace_id = uuid::Uuid::now_v7().simple().to_string();
    let request_id = format!("refund-call-{}", id());
    app.client
        .clone()
        .refund(in_call(
            &app,
            refund_request(&payment.payment_id, 500),
            &trace_id,
            &request_id,
        ))
        .await
        .unwrap();
    let line = logs
        .line_with(&["refund resolved", &payment.payment_id])
        .await;
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
    assert_eq!(line["request_id"], request_id.as_str(), "{line}");

    app.stop().await.unwrap();
    db.cleanup().await;
}
