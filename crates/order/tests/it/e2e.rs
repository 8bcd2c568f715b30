//! The PlaceOrder saga end to end: user, inventory, payment and order
//! in-process over real gRPC, on each backend.

use std::sync::Arc;
use std::time::Duration;

use agora_payment::TestGateway;
use agora_testkit::providers::FlakyProvider;

use agora_proto::inventory::v1 as inv;
use agora_proto::order::v1 as pb;
use agora_proto::payment::v1 as pay;
use agora_testkit::{backend_test, with_token};
use futures::StreamExt;
use pb::SagaStepKind::{
    ChargePayment as CHARGE, CommitStock as COMMIT, Confirm as CONFIRM, RefundPayment as REFUND,
    ReleaseStock as RELEASE, ReserveStock as RESERVE,
};
use pb::SagaStepStatus::{Failed as FAIL, Started as START, Succeeded as OK};
use tonic::Code;

use crate::suite::{ALWAYS, SLOW_CARD_DELAY, Suite, SuiteOptions, commit_proxy, failing_charges};
use crate::support::*;

backend_test! {
    async fn happy_path_confirms_with_inventory_prices(db: &TestDatabase) {
        let suite = Suite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 1200, 10).await;
        suite.product("TEE", 2500, 5).await;
        let (user_id, token) = customer(&suite.user, "ada@example.com").await;
        let client = suite.orders();

        let mut request = place_request(vec![line("MUG", 2), line("TEE", 1)], "tok_visa");
        // Prices in the request are ignored: inventory's are used.
        request.lines[0].unit_price = Some(agora_proto::Money { currency_code: "EUR".into(), amount_minor: 1 });
        let order = place(&client, request, &token).await.unwrap();
        assert_eq!(order.state(), pb::OrderState::Confirmed, "{order:#?}");
        assert_eq!(order.user_id, user_id);
        assert_eq!(order.total, Some(agora_proto::Money { currency_code: "EUR".into(), amount_minor: 2 * 1200 + 2500 }));
        assert_eq!(order.lines[0].unit_price.as_ref().unwrap().amount_minor, 1200);
        assert_eq!(order.lines[1].unit_price.as_ref().unwrap().amount_minor, 2500);
        assert!(order.failure_reason.is_empty());
        assert_eq!(
            steps(&order),
            vec![(RESERVE, START), (RESERVE, OK), (CHARGE, START), (CHARGE, OK), (COMMIT, START), (COMMIT, OK), (CONFIRM, OK)]
        );

        let payments = suite.payments_of(&order.order_id).await;
        assert_eq!(payments.len(), 1);
        assert_eq!(payments[0].payment_id, order.payment_id);
        assert_eq!(payments[0].state(), pay::PaymentState::Captured);
        assert_eq!(payments[0].user_id, user_id);
        let mug = suite.stock("MUG").await;
        assert_eq!((mug.on_hand, mug.reserved, mug.available), (8, 0, 8));
        let tee = suite.stock("TEE").await;
        assert_eq!((tee.on_hand, tee.reserved), (4, 0));
        suite.assert_reconciled(&order).await;
        suite.stop().await;
    }
}

backend_test! {
    async fn out_of_stock_fails_without_charging(db: &TestDatabase) {
        let suite = Suite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 1200, 1).await;
        suite.product("TEE", 2500, 5).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;

        let order = place(&suite.orders(), place_request(vec![line("TEE", 1), line("MUG", 3)], "tok_visa"), &token)
            .await
            .unwrap();
        assert_eq!(order.state(), pb::OrderState::Failed, "{order:#?}");
        assert_eq!(order.failure_reason, "OUT_OF_STOCK");
        assert!(order.failure_message.contains("MUG"), "{}", order.failure_message);
        assert_eq!(steps(&order), vec![(RESERVE, START), (RESERVE, FAIL)]);
        assert!(suite.payments_of(&order.order_id).await.is_empty(), "no charge at all");
        assert_eq!(suite.provider.captures(), 0);
        assert_eq!(suite.stock("MUG").await.available, 1);
        assert_eq!(suite.stock("TEE").await.available, 5, "all or nothing");

        // An unknown sku is a business failure too.
        let order = place(&suite.orders(), place_request(vec![line("NOPE", 1)], "tok_visa"), &token).await.unwrap();
        assert_eq!(order.failure_reason, "UNKNOWN_SKU");
        suite.assert_reconciled(&order).await;
        suite.stop().await;
    }
}

backend_test! {
    async fn a_declined_card_releases_the_stock(db: &TestDatabase) {
        let suite = Suite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 1200, 10).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;

        let order = place(&suite.orders(), place_request(vec![line("MUG", 4)], "tok_declined"), &token).await.unwrap();
        assert_eq!(order.state(), pb::OrderState::Failed, "{order:#?}");
        assert_eq!(order.failure_reason, "PAYMENT_DECLINED");
        assert!(order.failure_message.contains("card_declined"), "{}", order.failure_message);
        assert_eq!(
            steps(&order),
            vec![(RESERVE, START), (RESERVE, OK), (CHARGE, START), (CHARGE, FAIL), (RELEASE, START), (RELEASE, OK)]
        );
        let payments = suite.payments_of(&order.order_id).await;
        assert_eq!(payments.len(), 1);
        assert_eq!(payments[0].state(), pay::PaymentState::Declined);
        let mug = suite.stock("MUG").await;
        assert_eq!((mug.on_hand, mug.reserved, mug.available), (10, 0, 10));
        assert_eq!(suite.reservation_of(&order.order_id).await.unwrap().state(), inv::ReservationState::Released);
        suite.assert_reconciled(&order).await;
        suite.stop().await;
    }
}

backend_test! {
    async fn a_payment_outage_is_retried_and_the_order_confirmed(db: &TestDatabase) {
        // The payment client retries UNAVAILABLE 3 times per saga try: four
        // failures need a second saga try.
        let suite = Suite::start(db, SuiteOptions { provider: Some(failing_charges(4)), ..Default::default() }).await;
        suite.product("MUG", 1200, 10).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;

        let order = place(&suite.orders(), place_request(vec![line("MUG", 1)], "tok_visa"), &token).await.unwrap();
        assert_eq!(order.state(), pb::OrderState::Confirmed, "{order:#?}");
        let charges: Vec<_> = order.steps.iter().filter(|s| s.step() == CHARGE).map(|s| (s.status(), s.attempt)).collect();
        assert_eq!(charges, vec![(START, 1), (FAIL, 1), (START, 2), (OK, 2)]);
        assert_eq!(suite.provider.captures(), 1);
        assert_eq!(suite.payments_of(&order.order_id).await.len(), 1, "the same idempotency key every try");
        assert_eq!(suite.stock("MUG").await.on_hand, 9);
        suite.assert_reconciled(&order).await;
        suite.stop().await;
    }
}

backend_test! {
    async fn payment_down_for_good_compensates_and_holds_no_stock(db: &TestDatabase) {
        let suite = Suite::start(db, SuiteOptions { provider: Some(failing_charges(ALWAYS)), ..Default::default() }).await;
        suite.product("MUG", 1200, 10).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;

        let order = place(&suite.orders(), place_request(vec![line("MUG", 3)], "tok_visa"), &token).await.unwrap();
        assert_eq!(order.state(), pb::OrderState::Failed, "{order:#?}");
        assert_eq!(order.failure_reason, "PAYMENT_UNAVAILABLE");
        assert!(order.failure_message.contains("gave up after 3 tries"), "{}", order.failure_message);
        // The customer reads a plain reason; the payment service's own words
        // stay in the step history for operators.
        assert!(!order.failure_message.contains("answered"), "{}", order.failure_message);
        assert!(order.steps.iter().any(|s| s.detail.contains("payment answered")), "{order:#?}");
        let charge_tries = order.steps.iter().filter(|s| s.step() == CHARGE && s.status() == START).count();
        assert_eq!(charge_tries, 3);
        assert!(steps(&order).contains(&(RELEASE, OK)), "{order:#?}");
        // The stock is back; no money was taken (the payment is still PENDING
        // at the provider: the saga keeps settling it in the background).
        let mug = suite.stock("MUG").await;
        assert_eq!((mug.on_hand, mug.reserved, mug.available), (10, 0, 10));
        assert_eq!(suite.provider.captures(), 0);
        assert_eq!(suite.net_charged(&order.order_id).await, 0);
        suite.assert_reconciled(&order).await;
        suite.stop().await;
    }
}

backend_test! {
    async fn a_charge_captured_after_the_order_failed_is_refunded(db: &TestDatabase) {
        // The provider is down: the saga gives up and the order FAILS with the
        // payment left PENDING. The provider comes back and the payment
        // service's reconciler captures that payment; the order service,
        // still settling it in the background, refunds it.
        let suite = Suite::start(
            db,
            SuiteOptions {
                provider: Some(failing_charges(ALWAYS)),
                payment_reconcile: Some(Duration::from_millis(200)),
                ..Default::default()
            },
        )
        .await;
        suite.product("MUG", 1200, 10).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;
        let order = place(&suite.orders(), place_request(vec![line("MUG", 1)], "tok_visa"), &token).await.unwrap();
        assert_eq!(order.state(), pb::OrderState::Failed, "{order:#?}");
        assert_eq!(order.failure_reason, "PAYMENT_UNAVAILABLE");
        assert_eq!(suite.stock("MUG").await.available, 10);

        suite.provider.recover();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while suite.provider.refunds() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the late capture was never refunded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(suite.provider.captures(), 1, "the reconciler did capture it");
        let settled = wait_for_order(&suite.orders(), &order.order_id, &token, |o| {
            o.steps.last().is_some_and(|s| s.step() == REFUND && s.status() == OK)
        })
        .await;
        assert_eq!(settled.state(), pb::OrderState::Failed);
        assert_eq!(suite.net_charged(&order.order_id).await, 0);
        suite.assert_reconciled(&settled).await;
        suite.stop().await;
    }
}

backend_test! {
    async fn a_commit_failing_after_the_charge_is_refunded(db: &TestDatabase) {
        let fail_commits = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let suite = Suite::start(
            db,
            SuiteOptions { inventory_front: Some(commit_proxy(fail_commits.clone())), ..Default::default() },
        )
        .await;
        suite.product("MUG", 1200, 10).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;
        fail_commits.store(true, std::sync::atomic::Ordering::SeqCst);

        let order = place(&suite.orders(), place_request(vec![line("MUG", 2)], "tok_visa"), &token).await.unwrap();
        assert_eq!(order.state(), pb::OrderState::Failed, "{order:#?}");
        assert_eq!(order.failure_reason, "COMMIT_FAILED");
        assert_eq!(
            steps(&order),
            vec![
                (RESERVE, START), (RESERVE, OK), (CHARGE, START), (CHARGE, OK), (COMMIT, START), (COMMIT, FAIL),
                (RELEASE, START), (RELEASE, OK), (REFUND, START), (REFUND, OK),
            ]
        );
        let payments = suite.payments_of(&order.order_id).await;
        assert_eq!(payments.len(), 1);
        assert_eq!(payments[0].state(), pay::PaymentState::Refunded);
        assert_eq!(suite.provider.captures(), 1);
        assert_eq!(suite.provider.refunds(), 1);
        let mug = suite.stock("MUG").await;
        assert_eq!((mug.on_hand, mug.reserved), (10, 0));
        suite.assert_reconciled(&order).await;
        suite.stop().await;
    }
}

backend_test! {
    async fn concurrent_duplicates_make_one_order_and_one_charge(db: &TestDatabase) {
        let suite = Suite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 1200, 10).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;
        let request = place_request(vec![line("MUG", 1)], "tok_visa");

        let client = suite.orders();
        let attempts = (0..4).map(|_| {
            let (client, request, token) = (client.clone(), request.clone(), token.clone());
            tokio::spawn(async move { place(&client, request, &token).await })
        });
        let mut ids = Vec::new();
        for attempt in attempts {
            ids.push(attempt.await.unwrap().unwrap().order_id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "one order: {ids:?}");
        let order = wait_for_order(&client, &ids[0], &token, is_settled).await;
        assert_eq!(order.state(), pb::OrderState::Confirmed);
        // Once more, after it settled: still the same order, nothing new.
        assert_eq!(place(&client, request, &token).await.unwrap().order_id, order.order_id);
        assert_eq!(suite.payments_of(&order.order_id).await.len(), 1);
        assert_eq!(suite.provider.captures(), 1);
        assert_eq!(suite.stock("MUG").await.on_hand, 9);
        suite.assert_reconciled(&order).await;
        suite.stop().await;
    }
}

backend_test! {
    async fn cancelling_a_confirmed_order_refunds_and_restocks_once(db: &TestDatabase) {
        let suite = Suite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 1200, 10).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;
        let client = suite.orders();
        let order = place(&client, place_request(vec![line("MUG", 3)], "tok_visa"), &token).await.unwrap();
        assert_eq!(order.state(), pb::OrderState::Confirmed);
        assert_eq!(suite.stock("MUG").await.on_hand, 7);

        // Three cancellations at once: one wins the CONFIRMED → CANCELLING
        // swap and runs it; the others see it under way (or done).
        let cancel = pb::CancelOrderRequest { order_id: order.order_id.clone(), reason: "changed my mind".into() };
        let racing: Vec<_> = (0..3)
            .map(|_| {
                let (mut client, cancel, token) = (client.clone(), cancel.clone(), token.clone());
                tokio::spawn(async move { client.cancel_order(with_token(cancel, &token)).await })
            })
            .collect();
        for call in racing {
            let state = call.await.unwrap().unwrap().into_inner().order.unwrap().state();
            assert!(matches!(state, pb::OrderState::Cancelling | pb::OrderState::Cancelled), "{state:?}");
        }
        let cancelled = wait_for_order(&client, &order.order_id, &token, is_settled).await;
        assert_eq!(cancelled.state(), pb::OrderState::Cancelled, "{cancelled:#?}");
        assert!(cancelled.failure_reason.is_empty());
        let tail: Vec<_> = steps(&cancelled).into_iter().skip(7).collect();
        assert_eq!(tail, vec![(RELEASE, START), (RELEASE, OK), (REFUND, START), (REFUND, OK)]);
        let payments = suite.payments_of(&order.order_id).await;
        assert_eq!(payments[0].state(), pay::PaymentState::Refunded);
        assert_eq!(payments[0].refunds.len(), 1);
        assert!(payments[0].refunds[0].reason.contains("changed my mind"));
        let mug = suite.stock("MUG").await;
        assert_eq!((mug.on_hand, mug.reserved), (10, 0), "restocked");

        // Twice is harmless: same order, no second refund or restock.
        let again = client.clone().cancel_order(with_token(cancel, &token)).await.unwrap().into_inner().order.unwrap();
        assert_eq!(again.state(), pb::OrderState::Cancelled);
        assert_eq!(again.steps.len(), cancelled.steps.len());
        assert_eq!(suite.provider.refunds(), 1);
        assert_eq!(suite.stock("MUG").await.on_hand, 10);
        suite.assert_reconciled(&again).await;
        suite.stop().await;
    }
}

backend_test! {
    async fn a_short_deadline_answers_pending_and_watch_follows_to_confirmed(db: &TestDatabase) {
        // tok_slow: the test gateway approves after SLOW_CARD_DELAY (2 s); the
        // call's deadline (1 s) ends first, however slow the machine.
        let suite = Suite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 1200, 10).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;
        let client = suite.orders();

        let mut request = with_token(place_request(vec![line("MUG", 1)], "tok_slow"), &token);
        request.set_timeout(SLOW_CARD_DELAY / 2);
        let order = client.clone().place_order(request).await.unwrap().into_inner().order.unwrap();
        assert_eq!(order.state(), pb::OrderState::Pending, "{order:#?}");

        // A PENDING order cannot be cancelled: its saga is running.
        let status = client
            .clone()
            .cancel_order(with_token(pb::CancelOrderRequest { order_id: order.order_id.clone(), reason: String::new() }, &token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "ORDER_NOT_CANCELLABLE");

        let mut stream = client
            .clone()
            .watch_order(with_token(pb::WatchOrderRequest { order_id: order.order_id.clone() }, &token))
            .await
            .unwrap()
            .into_inner();
        let mut seen = Vec::new();
        while let Some(message) = tokio::time::timeout(Duration::from_secs(20), stream.next()).await.expect("watch stalled") {
            seen.push(message.unwrap().order.unwrap());
        }
        let states: Vec<_> = seen.iter().map(|o| o.state()).collect();
        assert_eq!(states.first(), Some(&pb::OrderState::Pending), "{states:?}");
        assert_eq!(states.last(), Some(&pb::OrderState::Confirmed), "{states:?}");
        assert!(states[..states.len() - 1].iter().all(|s| *s == pb::OrderState::Pending));
        // Each message is a newer version: the step log only grows.
        assert!(seen.windows(2).all(|w| w[0].steps.len() < w[1].steps.len()), "{seen:#?}");
        suite.assert_reconciled(seen.last().unwrap()).await;
        suite.stop().await;
    }
}

backend_test! {
    async fn a_slow_provider_confirms_concurrent_orders_instead_of_failing_them(db: &TestDatabase) {
        // The provider approves after 3 s, and each charge try gives up after
        // 1 s (a deployment whose timeout is below the provider's latency):
        // every try runs out of time, yet the sale is made. The saga asks
        // again under the same key until the payment answers, and the
        // breaker does not count slow tries as failures.
        let provider = Arc::new(FlakyProvider::new(Arc::new(TestGateway::new(Duration::from_secs(3)))));
        let suite = Suite::start(
            db,
            SuiteOptions {
                provider: Some(provider),
                order: Some(Box::new(|config| config.saga_charge_timeout = Duration::from_secs(1))),
                ..Default::default()
            },
        )
        .await;
        suite.product("MUG", 1200, 10).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;
        let client = suite.orders();
        let placed = futures::future::join_all((0..5).map(|_| {
            let client = client.clone();
            let token = token.clone();
            async move { place(&client, place_request(vec![line("MUG", 1)], "tok_slow"), &token).await.unwrap() }
        }))
        .await;
        for order in placed {
            let order = wait_for_order(&client, &order.order_id, &token, is_settled).await;
            assert_eq!(order.state(), pb::OrderState::Confirmed, "{order:#?}");
            suite.assert_reconciled(&order).await;
        }
        assert_eq!(suite.provider.captures(), 5, "one capture per order");
        assert_eq!(suite.provider.refunds(), 0, "nothing taken back");
        assert_eq!(suite.stock("MUG").await.on_hand, 5);
        suite.stop().await;
    }
}
