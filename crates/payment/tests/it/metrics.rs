//! Payments by outcome on the payment service's /metrics.

use agora_interceptors::config::PreboundListener;
use agora_testkit::{Keys, TestDatabase, http_get, sample};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_answers_are_counted_by_operation_and_outcome() {
    let db = TestDatabase::sqlite();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = listener.local_addr().unwrap();
    let gateway = gateway();
    let app = spawn_with(&db, gateway.clone(), gateway, Keys::new(), |config| {
        config.serve.metrics_prebound = PreboundListener::new(listener);
    })
    .await;
    let captured = app.charge(charge_request("tok_visa", 1000)).await.unwrap();
    app.charge(charge_request("tok_declined", 1000))
        .await
        .unwrap();
    app.charge(charge_request("tok_unknown", 1000))
        .await
        .unwrap();
    assert!(
        app.charge(charge_request("tok_processing_error", 1000))
            .await
            .is_err()
    );
    app.refund(refund_request(&captured.payment_id, 400))
        .await
        .unwrap();

    let (_, _, text) = http_get(metrics, "/metrics").await;
    for (operation, outcome) in [
        ("charge", "captured"),
        ("charge", "declined"),
        ("charge", "rejected"),
        ("charge", "unavailable"),
        ("refund", "refunded"),
    ] {
        let labels = format!(r#"operation="{operation}",outcome="{outcome}""#);
        assert_eq!(
            sample(&text, "agora_payments_total", &labels),
            Some(1.0),
            "{labels} in\n{text}"
        );
    }
    app.stop().await.unwrap();
    db.cleanup().await;
}
