//! Recovery and shutdown without inventory or payment: a saga whose runner
//! died is resumed by the next process; watchers are released on shutdown.

use std::sync::Arc;
use std::time::Duration;

use agora_order::{FaultPoint, ServeOptions};
use agora_proto::order::v1 as pb;
use agora_testkit::{backend_test, with_token};
use futures::StreamExt;
use tonic::Code;

use crate::support::*;

backend_test! {
    async fn a_saga_whose_runner_died_is_resumed_by_the_next_process(db: &TestDatabase) {
        let keys = Keys::new();
        let user_db = TestDatabase::like(db).await;
        let user = start_user(&user_db, &keys).await;
        let dead = dead_address().await;
        let mut config = order_config(db);
        config.user_url = format!("http://{}", user.addr());
        config.inventory_url = format!("http://{dead}");
        config.payment_url = format!("http://{dead}");
        config.saga_lease_ttl = Duration::from_millis(300);
        config.saga_attempt_timeout = Duration::from_millis(500);

        // The first process "crashes" right after recording the order.
        let crash: agora_order::FaultHook = Arc::new(|point| point == FaultPoint::Recorded);
        let first = start_order(config.clone(), &keys, ServeOptions { fault: Some(crash) }).await;
        let (_, token) = customer(&user, "ada@example.com").await;
        let placed = place(&order_client(&first), place_request(vec![line("MUG", 1)], "tok_visa"), &token)
            .await
            .unwrap();
        assert_eq!(placed.state(), pb::OrderState::Pending);
        assert!(placed.steps.is_empty(), "nothing ran: {placed:#?}");
        first.stop().await;

        // The next process finds it once the dead runner's lease expires,
        // and runs it to its end (here: inventory is unreachable).
        let second = start_order(config, &keys, ServeOptions::default()).await;
        let client = order_client(&second);
        let done = wait_for_order(&client, &placed.order_id, &token, is_settled).await;
        assert_eq!(done.state(), pb::OrderState::Failed);
        assert_eq!(done.failure_reason, "INVENTORY_UNAVAILABLE");
        assert_eq!(done.steps[0].step(), pb::SagaStepKind::ReserveStock);
        second.stop().await;
        user.stop().await;
        user_db.cleanup().await;
    }
}

backend_test! {
    async fn an_open_watch_ends_with_unavailable_on_shutdown(db: &TestDatabase) {
        let keys = Keys::new();
        let user_db = TestDatabase::like(db).await;
        let user = start_user(&user_db, &keys).await;
        let dead = dead_address().await;
        let mut config = order_config(db);
        config.user_url = format!("http://{}", user.addr());
        config.inventory_url = format!("http://{dead}");
        config.payment_url = format!("http://{dead}");
        // A crashed runner's lease outlives this test: the order stays PENDING.
        config.saga_lease_ttl = Duration::from_secs(600);
        config.serve.shutdown_grace = Duration::from_secs(30);
        let crash: agora_order::FaultHook = Arc::new(|point| point == FaultPoint::Recorded);
        let order = start_order(config, &keys, ServeOptions { fault: Some(crash) }).await;
        let (_, token) = customer(&user, "ada@example.com").await;
        let client = order_client(&order);
        let placed = place(&client, place_request(vec![line("MUG", 1)], "tok_visa"), &token).await.unwrap();
        assert_eq!(placed.state(), pb::OrderState::Pending);

        let mut stream = client
            .clone()
            .watch_order(with_token(pb::WatchOrderRequest { order_id: placed.order_id.clone() }, &token))
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap().order.unwrap();
        assert_eq!(first.state(), pb::OrderState::Pending);

        // Shutdown ends the stream with UNAVAILABLE at once, long before the
        // 30 s grace: an open watch never holds the drain.
        let started = tokio::time::Instant::now();
        let stopping = tokio::spawn(order.stop());
        let end = stream.next().await;
        match end {
            Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable),
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        }
        stopping.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(10), "drain took {:?}", started.elapsed());
        user.stop().await;
        user_db.cleanup().await;
    }
}
