//! What the payment server offers besides its API: health and reflection,
//! and a clean shutdown that lets provider calls in flight be recorded.

use std::time::Duration;

use agora_payment::gateway::TOK_SLOW;
use agora_proto::payment::v1 as pb;
use agora_testkit::{Keys, assert_served, backend_test, eventually, with_token};

use crate::support::{SERVICE, charge_request, gateway, spawn_app, spawn_with, state};

backend_test! {
    async fn health_and_reflection_cover_the_payment_service(db: &TestDatabase) {
        let app = spawn_app(db).await;
        assert_served(app.channel(), SERVICE).await;
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn shutdown_lets_a_provider_call_in_flight_finish_and_be_recorded(db: &TestDatabase) {
        let gateway = gateway(); // tok_slow answers after 500 ms
        let grace = Duration::from_secs(5);
        let app = spawn_with(db, gateway.clone(), gateway.clone(), Keys::new(), |config| {
            config.serve.shutdown_grace = grace;
        })
        .await;
        let request = charge_request(TOK_SLOW, 100);
        let call = with_token(request.clone(), &app.service_token());
        let mut client = app.client.clone();
        let caller = tokio::spawn(async move { client.charge(call).await });
        let asked = gateway.clone();
        eventually("the gateway to be asked", Duration::from_secs(5), move || {
            let asked = asked.clone();
            async move { (asked.charge_calls() == 1).then_some(()) }
        })
        .await;

        let started = std::time::Instant::now();
        app.stop().await.unwrap();
        assert!(started.elapsed() < grace, "shutdown stays within the grace period");
        let _ = caller.await;

        // The next process finds the charge recorded, without asking again.
        let app = spawn_with(db, gateway.clone(), gateway.clone(), Keys::new(), |_| {}).await;
        let recorded = app.order_payments(&request.order_id).await;
        assert_eq!(state(&recorded[0]), pb::PaymentState::Captured);
        assert_eq!(app.charge(request).await.unwrap(), recorded[0]);
        assert_eq!((gateway.charge_calls(), gateway.captures()), (1, 1));
        app.stop().await.unwrap();
    }
}
