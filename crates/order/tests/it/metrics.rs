//! The saga's business metrics on the order service's /metrics: orders by
//! final state and reason, step latency, compensations, and the unsettled
//! orders gauge.

use agora_interceptors::config::PreboundListener;
use agora_proto::order::v1 as pb;
use agora_testkit::{TestDatabase, http_get, sample};

use crate::suite::{Suite, SuiteOptions};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_orders_steps_and_compensations_are_counted() {
    let db = TestDatabase::sqlite();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = listener.local_addr().unwrap();
    let prebound = PreboundListener::new(listener);
    let suite = Suite::start(
        &db,
        SuiteOptions {
            order: Some(Box::new(move |config| {
                config.serve.metrics_prebound = prebound;
            })),
            ..SuiteOptions::default()
        },
    )
    .await;
    suite.product("MUG", 1200, 10).await;
    let (_, token) = customer(&suite.user, "metrics@example.com").await;
    let orders = suite.orders();
    let confirmed = place(
        &orders,
        place_request(vec![line("MUG", 1)], "tok_visa"),
        &token,
    )
    .await
    .unwrap();
    assert_eq!(confirmed.state(), pb::OrderState::Confirmed);
    let declined = place(
        &orders,
        place_request(vec![line("MUG", 1)], "tok_declined"),
        &token,
    )
    .await
    .unwrap();
    assert_eq!(declined.state(), pb::OrderState::Failed);

    let (status, _, text) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    let value = |name: &str, labels: &str| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{text}"))
    };
    assert_eq!(
        value(
            "agora_orders_settled_total",
            r#"state="CONFIRMED",reason="none""#
        ),
        1.0
    );
    assert_eq!(
        value(
            "agora_orders_settled_total",
            r#"state="FAILED",reason="PAYMENT_DECLINED""#
        ),
        1.0
    );
    assert_eq!(
        value("agora_saga_compensations_total", r#"step="RELEASE_STOCK""#),
        1.0
    );
    // Both orders reserved; the first was charged and committed, the
    // second's charge was declined (a try that answered, so SUCCEEDED or
    // FAILED is the step's verdict, timed either way).
    assert_eq!(
        value(
            "agora_saga_step_duration_seconds_count",
            r#"step="RESERVE_STOCK",outcome="SUCCEEDED""#
        ),
        2.0
    );
    assert_eq!(
        value(
            "agora_saga_step_duration_seconds_count",
            r#"step="COMMIT_STOCK",outcome="SUCCEEDED""#
        ),
        1.0
    );
    assert_eq!(value("agora_orders_unsettled", ""), 0.0);
    suite.stop().await;
    db.cleanup().await;
}
