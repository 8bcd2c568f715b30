//! The order service stopped abruptly at every step boundary of the saga
//! (and of a cancellation), then replaced by a new process on the same
//! database: every order reaches its end, and money and stock reconcile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agora_order::steps::StepKind;
use agora_order::{FaultHook, FaultPoint};
use agora_proto::order::v1 as pb;
use agora_testkit::{backend_test, with_token};

use crate::suite::{Suite, SuiteOptions};
use crate::support::*;

/// A hook that stops the runner the first time it reaches `at`, and records
/// that it did.
fn crash_once(at: FaultPoint) -> (FaultHook, Arc<AtomicBool>) {
    let fired = Arc::new(AtomicBool::new(false));
    let hook = {
        let fired = fired.clone();
        Arc::new(move |point: FaultPoint| point == at && !fired.swap(true, Ordering::SeqCst))
    };
    (hook, fired)
}

#[derive(Clone, Copy, Debug)]
enum Then {
    Confirmed,
    Failed,
    /// Placed and confirmed without faults, then cancelled: the crash is in
    /// the cancellation.
    Cancelled,
}

backend_test! {
    async fn a_crash_at_every_step_boundary_is_recovered_and_reconciles(db: &TestDatabase) {
        let mut suite = Suite::start(
            db,
            SuiteOptions {
                order: Some(Box::new(|config| {
                    // A dead runner's lease expires quickly.
                    config.saga_lease_ttl = Duration::from_millis(300);
                    config.saga_attempt_timeout = Duration::from_secs(1);
                })),
                ..Default::default()
            },
        )
        .await;
        suite.product("MUG", 1000, 100).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;

        use FaultPoint::{AfterCall, BeforeCall, Recorded};
        use StepKind::*;
        let scenarios = [
            (Recorded, "tok_visa", Then::Confirmed),
            (BeforeCall(ReserveStock), "tok_visa", Then::Confirmed),
            (AfterCall(ReserveStock), "tok_visa", Then::Confirmed),
            (BeforeCall(ChargePayment), "tok_visa", Then::Confirmed),
            (AfterCall(ChargePayment), "tok_visa", Then::Confirmed),
            (BeforeCall(CommitStock), "tok_visa", Then::Confirmed),
            (AfterCall(CommitStock), "tok_visa", Then::Confirmed),
            (AfterCall(ChargePayment), "tok_declined", Then::Failed),
            (BeforeCall(ReleaseStock), "tok_declined", Then::Failed),
            (AfterCall(ReleaseStock), "tok_declined", Then::Failed),
            (BeforeCall(ReleaseStock), "tok_visa", Then::Cancelled),
            (AfterCall(ReleaseStock), "tok_visa", Then::Cancelled),
            (BeforeCall(RefundPayment), "tok_visa", Then::Cancelled),
            (AfterCall(RefundPayment), "tok_visa", Then::Cancelled),
        ];

        let mut settled = Vec::new();
        for (quantity, (point, card, then)) in (1..).zip(scenarios) {
            // A process that will crash at `point`.
            suite.stop_order().await;
            let (hook, fired) = crash_once(point);
            suite.start_order(Some(hook)).await;
            let client = suite.orders();
            let placed = place(&client, place_request(vec![line("MUG", quantity)], card), &token)
                .await
                .unwrap();
            if let Then::Cancelled = then {
                assert_eq!(placed.state(), pb::OrderState::Confirmed, "{point:?}: {placed:#?}");
                let cancelling = client
                    .clone()
                    .cancel_order(with_token(
                        pb::CancelOrderRequest { order_id: placed.order_id.clone(), reason: "crash test".into() },
                        &token,
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .order
                    .unwrap();
                assert_eq!(cancelling.state(), pb::OrderState::Cancelling, "{point:?}: {cancelling:#?}");
            } else {
                assert_eq!(placed.state(), pb::OrderState::Pending, "{point:?}: {placed:#?}");
            }
            assert!(fired.load(Ordering::SeqCst), "the fault at {point:?} never fired");

            // The crashed process goes away; a new one on the same database
            // resumes the order once the dead runner's lease expires.
            suite.stop_order().await;
            suite.start_order(None).await;
            let client = suite.orders();
            let order = wait_for_order(&client, &placed.order_id, &token, is_settled).await;
            let expected = match then {
                Then::Confirmed => pb::OrderState::Confirmed,
                Then::Failed => pb::OrderState::Failed,
                Then::Cancelled => pb::OrderState::Cancelled,
            };
            assert_eq!(order.state(), expected, "{point:?} with {card}: {order:#?}");
            settled.push((order, quantity));
        }

        // Money and stock reconcile, order by order and in total.
        let mut sold = 0;
        for (order, quantity) in &settled {
            suite.assert_reconciled(order).await;
            if order.state() == pb::OrderState::Confirmed {
                sold += quantity;
            }
        }
        let mug = suite.stock("MUG").await;
        assert_eq!(mug.reserved, 0, "no stock held");
        assert_eq!(mug.on_hand, 100 - sold, "exactly the confirmed orders' stock is gone");
        let confirmed = settled.iter().filter(|(o, _)| o.state() == pb::OrderState::Confirmed).count() as u64;
        let cancelled = settled.iter().filter(|(o, _)| o.state() == pb::OrderState::Cancelled).count() as u64;
        assert_eq!(suite.provider.captures(), confirmed + cancelled, "one capture per paid order");
        assert_eq!(suite.provider.refunds(), cancelled, "one refund per cancelled order");
        suite.stop().await;
    }
}

backend_test! {
    async fn two_live_processes_resume_each_orphaned_order_exactly_once(db: &TestDatabase) {
        let mut suite = Suite::start(
            db,
            SuiteOptions {
                order: Some(Box::new(|config| {
                    // Long enough that a runner slowed by a loaded machine
                    // keeps its lease until the injected crash: a takeover
                    // before it would be a different (legitimate) story.
                    config.saga_lease_ttl = Duration::from_secs(2);
                    config.saga_attempt_timeout = Duration::from_secs(1);
                    config.saga_recovery_interval = Duration::from_millis(50);
                })),
                ..Default::default()
            },
        )
        .await;
        suite.product("MUG", 1000, 100).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;

        // Process A loses each of its first six orders right after the charge
        // was made (the answer is never recorded); process B, on the same
        // database, runs its recovery loop all along. Once A's leases expire
        // both race to resume the orders, and A, recovering too, may win some.
        const ORDERS: usize = 6;
        let crashes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hook: FaultHook = {
            let crashes = crashes.clone();
            Arc::new(move |point| {
                point == FaultPoint::AfterCall(StepKind::ChargePayment)
                    && crashes
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < ORDERS).then_some(n + 1))
                        .is_ok()
            })
        };
        suite.stop_order().await;
        suite.start_order(Some(hook)).await;
        let second = start_order(suite.order_config(), &suite.keys, agora_order::ServeOptions::default()).await;

        let client = suite.orders();
        let mut placed = Vec::new();
        for _ in 0..ORDERS {
            let order = place(&client, place_request(vec![line("MUG", 1)], "tok_visa"), &token).await.unwrap();
            assert_eq!(order.state(), pb::OrderState::Pending);
            placed.push(order.order_id);
        }
        assert_eq!(crashes.load(Ordering::SeqCst), ORDERS);

        let observer = order_client(&second);
        for id in &placed {
            let order = wait_for_order(&observer, id, &token, is_settled).await;
            assert_eq!(order.state(), pb::OrderState::Confirmed, "{order:#?}");
            // One runner at a time: the crashed try, then exactly one resumed
            // run; two runners at once would have logged their tries twice.
            use pb::SagaStepKind::{ChargePayment as C, CommitStock as M, Confirm as F, ReserveStock as R};
            use pb::SagaStepStatus::{Started as S, Succeeded as K};
            let log: Vec<_> = order.steps.iter().map(|s| (s.step(), s.status(), s.attempt)).collect();
            assert_eq!(
                log,
                vec![(R, S, 1), (R, K, 1), (C, S, 1), (C, S, 2), (C, K, 2), (M, S, 1), (M, K, 1), (F, K, 1)],
                "{order:#?}"
            );
            suite.assert_reconciled(&order).await;
        }
        assert_eq!(suite.provider.captures(), ORDERS as u64, "one capture per order");
        assert_eq!(suite.stock("MUG").await.on_hand, 100 - ORDERS as i64);
        second.stop().await;
        suite.stop().await;
    }
}

backend_test! {
    async fn with_default_leases_a_crashed_order_resumes_within_seconds(db: &TestDatabase) {
        let defaults = agora_order::OrderConfig::defaults();
        let mut suite = Suite::start(
            db,
            SuiteOptions {
                order: Some(Box::new(move |config| {
                    // The shipped lease and recovery settings, not the suite's.
                    config.saga_lease_ttl = defaults.saga_lease_ttl;
                    config.saga_recovery_interval = defaults.saga_recovery_interval;
                })),
                ..Default::default()
            },
        )
        .await;
        suite.product("MUG", 1000, 100).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;

        // Crash right after the charge, before its answer is recorded.
        suite.stop_order().await;
        let (hook, fired) = crash_once(FaultPoint::AfterCall(StepKind::ChargePayment));
        suite.start_order(Some(hook)).await;
        let placed = place(&suite.orders(), place_request(vec![line("MUG", 1)], "tok_visa"), &token)
            .await
            .unwrap();
        assert!(fired.load(Ordering::SeqCst));
        suite.stop_order().await;

        let restarted = std::time::Instant::now();
        suite.start_order(None).await;
        let order = wait_for_order(&suite.orders(), &placed.order_id, &token, is_settled).await;
        let took = restarted.elapsed();
        println!("terminal {took:?} after the restart");
        assert_eq!(order.state(), pb::OrderState::Confirmed, "{order:#?}");
        assert!(took < Duration::from_secs(10), "resumed {took:?} after the restart (was ~38 s with the 35 s lease)");
        assert_eq!(suite.provider.captures(), 1, "charged exactly once");
        suite.assert_reconciled(&order).await;
        suite.stop().await;
    }
}

backend_test! {
    async fn a_live_runner_keeps_its_short_lease_through_a_slow_step(db: &TestDatabase) {
        let suite = Suite::start(
            db,
            SuiteOptions {
                order: Some(Box::new(|config| {
                    // The slow card takes twice the lease: only the runner's
                    // heartbeat keeps the order from another process.
                    config.saga_lease_ttl = Duration::from_secs(1);
                    config.saga_recovery_interval = Duration::from_millis(50);
                })),
                ..Default::default()
            },
        )
        .await;
        suite.product("MUG", 1000, 100).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;
        // A second process looks for orphaned orders all along.
        let second = start_order(suite.order_config(), &suite.keys, agora_order::ServeOptions::default()).await;
        let order = place(&suite.orders(), place_request(vec![line("MUG", 1)], "tok_slow"), &token).await.unwrap();
        let order = wait_for_order(&suite.orders(), &order.order_id, &token, is_settled).await;
        assert_eq!(order.state(), pb::OrderState::Confirmed, "{order:#?}");
        use pb::SagaStepKind::ChargePayment as C;
        use pb::SagaStepStatus::Started as S;
        let charge_tries = order.steps.iter().filter(|s| s.step() == C && s.status() == S).count();
        assert_eq!(charge_tries, 1, "no other runner took the order over: {order:#?}");
        assert_eq!(suite.provider.captures(), 1);
        second.stop().await;
        suite.stop().await;
    }
}
