//! A broker outage under real order load: the whole suite relays its events
//! to a private nats-server, customers place orders through gRPC from
//! several tasks while the server is killed and later started again on the
//! same storage, and the notification service reads the streams through
//! its JetStream durable consumer. Every order settles (some confirmed, some
//! declined, some cancelled), every event arrives once and in order per
//! aggregate, and every outcome has exactly one notification. Needs
//! `nats-server` on the PATH; without it the test prints a note and passes,
//! unless `AGORA_REQUIRE_NATS` is set.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_interceptors::db::Database;
use agora_interceptors::outbox::{Outbox, RelaySettings};
use agora_proto::events::v1 as ev;
use agora_proto::notification::v1 as pb;
use agora_proto::order::v1 as order_pb;
use agora_testkit::nats::{Broker, assert_once_in_order, free_port, stream_events};
use agora_testkit::{backend_test, eventually, services, with_token};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Orders placed so far: (order id, the customer's token, whether its
/// cancellation was asked).
type Placed = Arc<Mutex<Vec<(String, String, bool)>>>;

/// Places orders as one customer until `stop`: one in four with a card
/// that is declined (a FAILED order), the rest paid, and one in five of
/// those cancelled at once (refunded).
async fn shop(suite: &TestSuite, token: String, placed: Placed, stop: CancellationToken) {
    let mut orders = suite.orders();
    let mut n = 0;
    while !stop.is_cancelled() {
        n += 1;
        let request = order_pb::PlaceOrderRequest {
            lines: vec![order_pb::OrderLine {
                sku: "MUG".into(),
                quantity: 1,
                unit_price: None,
            }],
            payment_method_token: if n % 4 == 0 {
                "tok_declined"
            } else {
                "tok_visa"
            }
            .into(),
            request_id: uuid::Uuid::now_v7().to_string(),
        };
        let order = orders
            .place_order(with_token(request, &token))
            .await
            .expect("PlaceOrder, broker or not")
            .into_inner()
            .order
            .expect("the order");
        let cancel = n % 5 == 0 && order.state() == order_pb::OrderState::Confirmed;
        if cancel {
            let request = order_pb::CancelOrderRequest {
                order_id: order.order_id.clone(),
                reason: "changed my mind".into(),
            };
            orders
                .cancel_order(with_token(request, &token))
                .await
                .expect("CancelOrder, broker or not");
        }
        placed
            .lock()
            .unwrap()
            .push((order.order_id, token.clone(), cancel));
    }
}

/// Waits until at least `n` orders were placed.
async fn placed_at_least(placed: &Placed, n: usize, what: &str) {
    eventually(what, Duration::from_secs(30), || {
        let count = placed.lock().unwrap().len();
        async move { (count >= n).then_some(()) }
    })
    .await;
}

backend_test! {
    async fn orders_placed_through_a_broker_outage_arrive_once_in_order_and_notify_once(db: &TestDatabase) {
        let port = free_port().await;
        let storage = tempfile::tempdir().unwrap();
        let Some(broker) = Broker::start(port, storage.path()).await else {
            return;
        };
        let nats = RelaySettings { url: broker.url(), prefix: String::new() };
        let suite = TestSuite::start(db, SuiteOptions { nats: Some(nats.clone()), ..Default::default() }).await;
        suite.product("MUG", 100, 100_000).await;
        let order_db = Database::open(db.url(), &Default::default(), &agora_order::MIGRATIONS).await.unwrap();
        let order_outbox = Outbox::new(order_db.clone(), "order");
        let notes_db = TestDatabase::like(db).await;
        let notifier = TestNotifier::default();
        let notes = services::start_notification(
            &notes_db,
            &suite.keys,
            suite.order.as_ref().unwrap().addr(),
            suite.payment.addr(),
            Arc::new(notifier.clone()),
            |config| config.serve.nats_url = Some(nats.url.clone()),
        )
        .await;

        // Three customers shop continuously.
        let suite = Arc::new(suite);
        let placed: Placed = Arc::default();
        let stop = CancellationToken::new();
        let mut shoppers = Vec::new();
        for i in 0..3 {
            let (_, token) = customer(&suite, &format!("shopper{i}@example.com")).await;
            let (suite, placed, stop) = (suite.clone(), placed.clone(), stop.clone());
            shoppers.push(tokio::spawn(async move { shop(&suite, token, placed, stop).await }));
        }
        placed_at_least(&placed, 6, "orders before the outage").await;
        eventually("the first notifications", Duration::from_secs(30), || {
            let sent = notifier.recorded.sent().len();
            async move { (sent > 0).then_some(()) }
        })
        .await;

        // The broker dies; orders go on, and their events wait in the outboxes.
        broker.kill().await;
        let before = placed.lock().unwrap().len();
        placed_at_least(&placed, before + 15, "orders during the outage").await;
        assert!(order_outbox.unpublished().await.unwrap() > 0, "events wait while the broker is down");

        // Back on the same storage; more orders, then the shoppers stop.
        let broker = Broker::start(port, storage.path()).await.unwrap();
        let back = placed.lock().unwrap().len();
        placed_at_least(&placed, back + 6, "orders after the outage").await;
        stop.cancel();
        for shopper in shoppers {
            shopper.await.unwrap();
        }
        let placed = placed.lock().unwrap().clone();

        // Every order settles.
        let mut outcomes = BTreeMap::new();
        for (order_id, token, cancelled) in &placed {
            let order = eventually("the order to settle", Duration::from_secs(30), || async {
                let order = suite
                    .orders()
                    .get_order(with_token(order_pb::GetOrderRequest { order_id: order_id.clone() }, token))
                    .await
                    .unwrap()
                    .into_inner()
                    .order
                    .unwrap();
                let settled = if *cancelled {
                    order.state() == order_pb::OrderState::Cancelled
                } else {
                    matches!(order.state(), order_pb::OrderState::Confirmed | order_pb::OrderState::Failed)
                };
                settled.then_some(order)
            })
            .await;
            outcomes.insert(order_id.clone(), order.state());
        }
        for state in [order_pb::OrderState::Failed, order_pb::OrderState::Cancelled] {
            assert!(outcomes.values().any(|s| *s == state), "some {state:?}");
        }

        // The order stream holds every event of the outbox, once, in order
        // per order, each order ending in its outcome.
        eventually("the order outbox published", Duration::from_secs(30), || async {
            (order_outbox.unpublished().await.unwrap() == 0).then_some(())
        })
        .await;
        let outbox_ids: HashSet<String> = sqlx::query_scalar("SELECT event_id FROM outbox")
            .fetch_all(order_db.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
        let events = stream_events(&nats.url, &nats.stream_name("agora/order")).await;
        let by_order = assert_once_in_order(&events);
        let stream_ids: HashSet<String> = events.iter().map(|e| e.id.clone()).collect();
        assert_eq!(stream_ids, outbox_ids, "none lost, none invented");
        for (order_id, state) in &outcomes {
            let last = by_order[order_id].last().unwrap();
            let want = match state {
                order_pb::OrderState::Confirmed => "agora.order.OrderConfirmed",
                order_pb::OrderState::Cancelled => "agora.order.OrderCancelled",
                _ => "agora.order.OrderFailed",
            };
            assert_eq!(last.r#type, want, "{order_id}");
        }
        // The other services' streams: once, in order, and payment's has a
        // capture for every order confirmed (cancelled ones too) and a
        // refund for every cancelled one.
        let with_state = |states: &[order_pb::OrderState]| -> HashSet<String> {
            outcomes.iter().filter(|(_, s)| states.contains(s)).map(|(id, _)| id.clone()).collect()
        };
        let paid = with_state(&[order_pb::OrderState::Confirmed, order_pb::OrderState::Cancelled]);
        let refunded = with_state(&[order_pb::OrderState::Cancelled]);
        eventually("the payment stream complete", Duration::from_secs(30), || async {
            let events = stream_events(&nats.url, &nats.stream_name("agora/payment")).await;
            assert_once_in_order(&events);
            let (mut captures, mut refunds) = (HashSet::new(), HashSet::new());
            for event in &events {
                match &event.payload {
                    Some(ev::event::Payload::PaymentCaptured(c)) => captures.insert(c.order_id.clone()),
                    Some(ev::event::Payload::PaymentRefunded(r)) => refunds.insert(r.order_id.clone()),
                    _ => false,
                };
            }
            (paid.is_subset(&captures) && refunded.is_subset(&refunds)).then_some(())
        })
        .await;
        assert_once_in_order(&stream_events(&nats.url, &nats.stream_name("agora/inventory")).await);

        // Exactly one notification per outcome: confirmed or failed, and
        // for a cancelled order its confirmation, cancellation and refund.
        use pb::NotificationKind as K;
        let want: BTreeMap<String, Vec<K>> = outcomes
            .iter()
            .map(|(order_id, state)| {
                let mut kinds = match state {
                    order_pb::OrderState::Confirmed => vec![K::OrderConfirmed],
                    order_pb::OrderState::Cancelled => vec![K::OrderConfirmed, K::OrderCancelled, K::PaymentRefunded],
                    _ => vec![K::OrderFailed],
                };
                kinds.sort();
                (order_id.clone(), kinds)
            })
            .collect();
        let admin = suite.keys.admin_token();
        let got = wait_for_notifications(&notes, &admin, want.values().map(Vec::len).sum()).await;
        let mut notified: BTreeMap<String, Vec<K>> = BTreeMap::new();
        for n in &got {
            notified.entry(n.order_id.clone()).or_default().push(n.kind());
        }
        for kinds in notified.values_mut() {
            kinds.sort();
        }
        assert_eq!(notified, want, "one notification per outcome");

        notes.stop().await;
        notes_db.cleanup().await;
        Arc::into_inner(suite).expect("the shoppers are done").stop().await;
        broker.kill().await;
    }
}
