//! What the payment server offers besides its API: health that follows its
//! database, and a clean shutdown.

use std::time::Duration;

use agora_payment::gateway::TOK_SLOW;
use agora_proto::payment::v1 as pb;
use agora_testkit::{TestDatabase, TestKeys, backend_test, with_token};
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{SERVICE, charge_request, eventually, gateway, spawn_app, spawn_with, state};

backend_test! {
    async fn health_reports_the_payment_service_serving(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let mut health = HealthClient::new(app.channel());
        for service in ["", SERVICE] {
            let status = health
                .check(HealthCheckRequest { service: service.into() })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        app.stop().await.unwrap();
    }
}

/// Readiness follows the database: dropped → NOT_SERVING, back → SERVING.
/// Only PostgreSQL can be taken away from under a running service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database_down_and_back_on_postgres() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let gateway = gateway();
    let app = spawn_with(&db, gateway.clone(), gateway, TestKeys::new(), |config| {
        config.serve.readiness_interval = Duration::from_millis(50);
    })
    .await;
    let mut health = HealthClient::new(app.channel());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut next_status = async move || {
        tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a health change within 10 s")
            .unwrap()
            .unwrap()
            .status
    };
    assert_eq!(next_status().await, ServingStatus::Serving as i32);
    db.take_offline().await;
    assert_eq!(next_status().await, ServingStatus::NotServing as i32);
    db.bring_back().await;
    assert_eq!(next_status().await, ServingStatus::Serving as i32);
    app.stop().await.unwrap();
    db.cleanup().await;
}

backend_test! {
    async fn shutdown_lets_a_provider_call_in_flight_finish_and_be_recorded(db: &TestDatabase) {
        let gateway = gateway(); // tok_slow answers after 500 ms
        let grace = Duration::from_secs(5);
        let app = spawn_with(db, gateway.clone(), gateway.clone(), TestKeys::new(), |config| {
            config.serve.shutdown_grace = grace;
        })
        .await;
        let request = charge_request(TOK_SLOW, 100);
        let call = with_token(request.clone(), &app.service_token());
        let mut client = app.client.clone();
        let caller = tokio::spawn(async move { client.charge(call).await });
        let asked = gateway.clone();
        eventually(Duration::from_secs(5), "the gateway to be asked", move || {
            let asked = asked.clone();
            async move { asked.charge_calls() == 1 }
        })
        .await;

        let started = std::time::Instant::now();
        app.stop().await.unwrap();
        assert!(started.elapsed() < grace, "shutdown stays within the grace period");
        let _ = caller.await;

        // The next process finds the charge recorded, without asking again.
        let app = spawn_with(db, gateway.clone(), gateway.clone(), TestKeys::new(), |_| {}).await;
        let recorded = app.order_payments(&request.order_id).await;
        assert_eq!(state(&recorded[0]), pb::PaymentState::Captured);
        assert_eq!(app.charge(request).await.unwrap(), recorded[0]);
        assert_eq!((gateway.charge_calls(), gateway.captures()), (1, 1));
        app.stop().await.unwrap();
    }
}
