//! Domain events over the real gRPC feeds (`agora.events.v1.EventFeedService`
//! on every service): each saga state change yields exactly its events, in
//! order per aggregate; a change that rolls back yields none; a consumer
//! that reconnects with its last cursor misses nothing and sees nothing
//! twice; a cursor older than retention is refused with the oldest one;
//! concurrent writers get gap-free positions and per-aggregate sequences.

use std::time::Duration;

use agora_interceptors::outbox::{Batch, NewEvent};
use agora_proto::events::v1 as ev;
use agora_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agora_proto::order::v1 as pb;
use agora_testkit::status::{metadata, reason};
use agora_testkit::{TestServer, backend_test, with_token};
use tonic::Code;
use tonic::Streaming;

use crate::suite::{Suite, SuiteOptions};
use crate::support::*;

/// A Subscribe stream on `server`'s feed, as a service.
async fn subscribe(
    suite: &Suite,
    server: &TestServer,
    cursor: &str,
    types: &[&str],
) -> Result<Streaming<ev::SubscribeResponse>, tonic::Status> {
    let request = ev::SubscribeRequest {
        cursor: cursor.to_owned(),
        types: types.iter().map(|t| (*t).to_owned()).collect(),
    };
    EventFeedServiceClient::new(server.channel())
        .subscribe(with_token(request, &suite.keys.service_token()))
        .await
        .map(tonic::Response::into_inner)
}

/// The next `n` messages of `stream`, failing after 10 s.
async fn take(
    stream: &mut Streaming<ev::SubscribeResponse>,
    n: usize,
) -> Vec<ev::SubscribeResponse> {
    let mut got = Vec::new();
    while got.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "waited 10 s for event {} of {n}; got {got:#?}",
                    got.len() + 1
                )
            });
        got.push(next.unwrap().expect("the feed stays open"));
    }
    got
}

/// True when nothing more arrives on `stream` within a short while.
async fn quiet(stream: &mut Streaming<ev::SubscribeResponse>) -> bool {
    tokio::time::timeout(Duration::from_millis(300), stream.message())
        .await
        .is_err()
}

/// (type, subject, sequence) of each event.
fn summary(responses: &[ev::SubscribeResponse]) -> Vec<(String, String, i64)> {
    responses
        .iter()
        .map(|r| {
            let e = r.event.as_ref().unwrap();
            (e.r#type.clone(), e.subject.clone(), e.sequence)
        })
        .collect()
}

fn about<'a>(responses: &'a [ev::SubscribeResponse], subject: &str) -> Vec<&'a ev::Event> {
    responses
        .iter()
        .filter_map(|r| r.event.as_ref())
        .filter(|e| e.subject == subject)
        .collect()
}

fn kinds(events: &[&ev::Event]) -> Vec<String> {
    events.iter().map(|e| e.r#type.clone()).collect()
}

backend_test! {
    async fn every_saga_state_change_has_exactly_its_events(db: &TestDatabase) {
        let suite = Suite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 1200, 10).await;
        let (user_id, token) = customer(&suite.user, "ada@example.com").await;
        let orders = suite.orders();
        let order_server = suite.order.as_ref().unwrap();
        let mut feed = subscribe(&suite, order_server, "", &[]).await.unwrap();

        // Confirmed, then cancelled.
        let confirmed = place(&orders, place_request(vec![line("MUG", 2)], "tok_visa"), &token).await.unwrap();
        assert_eq!(confirmed.state(), pb::OrderState::Confirmed);
        // Declined: failed with its reason.
        let declined = place(&orders, place_request(vec![line("MUG", 1)], "tok_declined"), &token).await.unwrap();
        assert_eq!(declined.state(), pb::OrderState::Failed);
        orders
            .clone()
            .cancel_order(with_token(
                pb::CancelOrderRequest { order_id: confirmed.order_id.clone(), reason: "changed my mind".into() },
                &token,
            ))
            .await
            .unwrap();
        wait_for_order(&orders, &confirmed.order_id, &token, |o| o.state() == pb::OrderState::Cancelled).await;

        let got = take(&mut feed, 5).await;
        assert!(quiet(&mut feed).await, "no event beyond the five: {:#?}", summary(&got));
        let first = about(&got, &confirmed.order_id);
        assert_eq!(
            kinds(&first),
            ["agora.order.OrderPlaced", "agora.order.OrderConfirmed", "agora.order.OrderCancelled"]
        );
        assert_eq!(first.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2, 3]);
        let second = about(&got, &declined.order_id);
        assert_eq!(kinds(&second), ["agora.order.OrderPlaced", "agora.order.OrderFailed"]);
        assert_eq!(second.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2]);

        // The envelope and payloads say what happened.
        for event in &got {
            let event = event.event.as_ref().unwrap();
            assert_eq!(event.source, "agora/order");
            let id = uuid::Uuid::parse_str(&event.id).unwrap();
            assert_eq!(id.get_version_num(), 7, "{event:?}");
            assert!(event.time.is_some());
        }
        match &first[1].payload {
            Some(ev::event::Payload::OrderConfirmed(c)) => {
                assert_eq!(c.user_id, user_id);
                assert_eq!(c.payment_id, confirmed.payment_id);
                assert_eq!(c.total.as_ref().unwrap().amount_minor, 2400);
            }
            other => panic!("not OrderConfirmed: {other:?}"),
        }
        match &first[2].payload {
            Some(ev::event::Payload::OrderCancelled(c)) => assert_eq!(c.reason, "changed my mind"),
            other => panic!("not OrderCancelled: {other:?}"),
        }
        match &second[1].payload {
            Some(ev::event::Payload::OrderFailed(f)) => {
                assert_eq!(f.reason, declined.failure_reason);
                assert!(!f.reason.is_empty());
            }
            other => panic!("not OrderFailed: {other:?}"),
        }
        // The caller's trace travels with the events PlaceOrder caused.
        assert!(first[0].traceparent.starts_with("00-"), "{:?}", first[0]);

        // Payment: captured then refunded for the first order; failed for the
        // declined one.
        let mut payments = subscribe(&suite, &suite.payment, "", &[]).await.unwrap();
        let got = take(&mut payments, 3).await;
        assert!(quiet(&mut payments).await, "{:#?}", summary(&got));
        let kinds_of = |order: &str| {
            got.iter()
                .filter_map(|r| r.event.as_ref())
                .filter(|e| match &e.payload {
                    Some(ev::event::Payload::PaymentCaptured(p)) => p.order_id == order,
                    Some(ev::event::Payload::PaymentRefunded(p)) => p.order_id == order,
                    Some(ev::event::Payload::PaymentFailed(p)) => p.order_id == order,
                    _ => false,
                })
                .map(|e| e.r#type.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds_of(&confirmed.order_id), ["agora.payment.PaymentCaptured", "agora.payment.PaymentRefunded"]);
        assert_eq!(kinds_of(&declined.order_id), ["agora.payment.PaymentFailed"]);

        // Inventory: reserved, committed, released (restocked) for the first
        // order; reserved, released for the declined one; and the stock the
        // suite put in at the start.
        let mut stock = subscribe(&suite, &suite.inventory, "", &[]).await.unwrap();
        let got = take(&mut stock, 6).await;
        assert!(quiet(&mut stock).await, "{:#?}", summary(&got));
        assert_eq!(
            kinds(&about(&got, &confirmed.order_id)),
            ["agora.inventory.StockReserved", "agora.inventory.StockCommitted", "agora.inventory.StockReleased"]
        );
        assert_eq!(
            kinds(&about(&got, &declined.order_id)),
            ["agora.inventory.StockReserved", "agora.inventory.StockReleased"]
        );
        assert_eq!(kinds(&about(&got, "MUG")), ["agora.inventory.StockAdjusted"]);

        // User: the customer registered.
        let mut users = subscribe(&suite, &suite.user, "", &["agora.user.UserRegistered"]).await.unwrap();
        let got = take(&mut users, 1).await;
        assert_eq!(got[0].event.as_ref().unwrap().subject, user_id);
        suite.stop().await;
    }
}

backend_test! {
    async fn a_change_that_rolls_back_has_no_events(db: &TestDatabase) {
        let suite = Suite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 1200, 1).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;
        let orders = suite.orders();

        // Out of stock: inventory's reservation rolls back, so inventory
        // says nothing about this order; the order fails.
        let order = place(&orders, place_request(vec![line("MUG", 3)], "tok_visa"), &token).await.unwrap();
        assert_eq!(order.state(), pb::OrderState::Failed);
        // A repeated PlaceOrder (same request id) records nothing new.
        let request = place_request(vec![line("MUG", 1)], "tok_visa");
        let once = place(&orders, request.clone(), &token).await.unwrap();
        let again = place(&orders, request, &token).await.unwrap();
        assert_eq!(once.order_id, again.order_id);

        let mut stock = subscribe(&suite, &suite.inventory, "", &[]).await.unwrap();
        let got = take(&mut stock, 3).await;
        assert!(quiet(&mut stock).await, "{:#?}", summary(&got));
        assert!(about(&got, &order.order_id).is_empty(), "{:#?}", summary(&got));
        assert_eq!(
            kinds(&about(&got, &once.order_id)),
            ["agora.inventory.StockReserved", "agora.inventory.StockCommitted"]
        );

        let mut feed = subscribe(&suite, suite.order.as_ref().unwrap(), "", &["agora.order.OrderPlaced"]).await.unwrap();
        let got = take(&mut feed, 2).await;
        assert!(quiet(&mut feed).await, "one OrderPlaced per order: {:#?}", summary(&got));
        suite.stop().await;
    }
}

backend_test! {
    async fn a_consumer_resuming_from_its_cursor_misses_nothing_and_repeats_nothing(db: &TestDatabase) {
        let suite = Suite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 100, 1000).await;
        let (_, token) = customer(&suite.user, "ada@example.com").await;
        let orders = suite.orders();
        let order_server = suite.order.as_ref().unwrap();
        for _ in 0..3 {
            place(&orders, place_request(vec![line("MUG", 1)], "tok_visa"), &token).await.unwrap();
        }

        // Read three events, then disconnect.
        let mut feed = subscribe(&suite, order_server, "", &[]).await.unwrap();
        let before = take(&mut feed, 3).await;
        drop(feed);
        // More happens while nobody listens, and while the consumer follows.
        for _ in 0..2 {
            place(&orders, place_request(vec![line("MUG", 1)], "tok_visa"), &token).await.unwrap();
        }
        let mut feed = subscribe(&suite, order_server, &before[2].cursor, &[]).await.unwrap();
        let mut after = take(&mut feed, 7).await;
        place(&orders, place_request(vec![line("MUG", 1)], "tok_visa"), &token).await.unwrap();
        after.extend(take(&mut feed, 2).await);
        assert!(quiet(&mut feed).await);

        // Exactly what one uninterrupted read from the start gives.
        let mut whole = subscribe(&suite, order_server, "", &[]).await.unwrap();
        let all = take(&mut whole, 12).await;
        assert!(quiet(&mut whole).await);
        let joined: Vec<_> = before.iter().chain(&after).map(|r| r.event.as_ref().unwrap().id.clone()).collect();
        let expected: Vec<_> = all.iter().map(|r| r.event.as_ref().unwrap().id.clone()).collect();
        assert_eq!(joined, expected);

        // Filtered by type.
        let mut placed = subscribe(&suite, order_server, "", &["agora.order.OrderPlaced"]).await.unwrap();
        let got = take(&mut placed, 6).await;
        assert!(got.iter().all(|r| r.event.as_ref().unwrap().r#type == "agora.order.OrderPlaced"));
        assert!(quiet(&mut placed).await);

        // A cursor this feed never gave.
        let status = subscribe(&suite, order_server, "p999999", &[]).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let status = subscribe(&suite, order_server, "garbage", &[]).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

        // Retention prunes everything so far: the old cursor is refused
        // with the oldest one still valid, which then follows on.
        let pruned = outbox_on(db).await.prune(i64::MAX, false).await.unwrap();
        assert_eq!(pruned, 12);
        let status = subscribe(&suite, order_server, &before[2].cursor, &[]).await.unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        assert_eq!(reason(&status), "CURSOR_EXPIRED");
        let oldest = metadata(&status, "oldest_cursor");
        assert_eq!(oldest, all[11].cursor);
        let mut feed = subscribe(&suite, order_server, &oldest, &[]).await.unwrap();
        place(&orders, place_request(vec![line("MUG", 1)], "tok_visa"), &token).await.unwrap();
        let next = take(&mut feed, 2).await;
        assert_eq!(next[0].event.as_ref().unwrap().r#type, "agora.order.OrderPlaced");
        suite.stop().await;
    }
}

backend_test! {
    async fn the_feed_is_for_services_and_admins(db: &TestDatabase) {
        let suite = Suite::start(db, SuiteOptions::default()).await;
        let (user_id, token) = customer(&suite.user, "ada@example.com").await;
        let request = ev::SubscribeRequest::default();
        let status = EventFeedServiceClient::new(suite.order.as_ref().unwrap().channel())
            .subscribe(with_token(request.clone(), &token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let mut admin = EventFeedServiceClient::new(suite.user.channel())
            .subscribe(with_token(request, &suite.keys.admin_token()))
            .await
            .unwrap()
            .into_inner();
        let got = take(&mut admin, 1).await;
        assert_eq!(got[0].event.as_ref().unwrap().subject, user_id);
        suite.stop().await;
    }
}

backend_test! {
    async fn concurrent_writers_get_gap_free_positions_and_sequences(db: &TestDatabase) {
        let outbox = outbox_on(db).await;
        // 8 writers × 20 transactions over 3 aggregates, every 4th rolled
        // back after appending: the committed events must number 1..N in
        // position order and 1..k per aggregate, the rolled back ones absent.
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    let mut committed = Vec::new();
                    for round in 0..20 {
                        let subject = format!("order-{}", (writer + round) % 3);
                        let event_id = format!("w{writer}-r{round}");
                        let mut tx = outbox.database().begin_write().await.unwrap();
                        let event = NewEvent::new(
                            subject,
                            ev::event::Payload::OrderPlaced(ev::OrderPlaced {
                                order_id: event_id.clone(),
                                ..Default::default()
                            }),
                        );
                        let appended = outbox.append(&mut tx, &[event]).await.unwrap();
                        if round % 4 == 3 {
                            tx.rollback().await.unwrap();
                        } else {
                            tx.commit().await.unwrap();
                            outbox.committed(appended);
                            committed.push(event_id);
                        }
                    }
                    committed
                })
            })
            .collect();
        let mut committed = Vec::new();
        for writer in writers {
            committed.extend(writer.await.unwrap());
        }
        let Batch::Events(events) = outbox.read_after(None, 1000).await.unwrap() else {
            panic!("the outbox is readable from its start");
        };
        let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
        assert_eq!(positions, (1..=committed.len() as i64).collect::<Vec<_>>(), "gap-free, committed only");
        let mut found: Vec<String> = events
            .iter()
            .map(|e| match &e.event.payload {
                Some(ev::event::Payload::OrderPlaced(placed)) => placed.order_id.clone(),
                other => panic!("unexpected payload {other:?}"),
            })
            .collect();
        found.sort();
        committed.sort();
        assert_eq!(found, committed, "exactly the committed events");
        for subject in ["order-0", "order-1", "order-2"] {
            let sequences: Vec<i64> = events.iter().filter(|e| e.event.subject == subject).map(|e| e.event.sequence).collect();
            assert_eq!(sequences, (1..=sequences.len() as i64).collect::<Vec<_>>(), "{subject}: 1, 2, 3 … in position order");
        }
        // Resuming after any event gives exactly the ones after it.
        let middle = events[events.len() / 2].position;
        let Batch::Events(rest) = outbox
            .read_after(Some(agora_interceptors::outbox::Cursor(middle)), 1000)
            .await
            .unwrap()
        else {
            panic!("a cursor of this outbox");
        };
        assert_eq!(rest.first().map(|e| e.position), Some(middle + 1));
        assert_eq!(rest.len(), events.len() - events.len() / 2 - 1);
    }
}

backend_test! {
    async fn pruning_walks_from_the_oldest_in_chunks_and_stops_at_the_retention_line(db: &TestDatabase) {
        use agora_interceptors::api::time::now_micros;
        use agora_interceptors::outbox::Cursor;

        let outbox = outbox_on(db).await;
        let append = |count: usize| {
            let outbox = outbox.clone();
            async move {
                let events: Vec<_> = (0..count)
                    .map(|n| NewEvent::new(format!("order-{n}"), ev::event::Payload::OrderPlaced(ev::OrderPlaced::default())))
                    .collect();
                let mut tx = outbox.database().begin_write().await.unwrap();
                let appended = outbox.append(&mut tx, &events).await.unwrap();
                tx.commit().await.unwrap();
                outbox.committed(appended);
            }
        };
        // More old events than one prune transaction takes, then a few new ones.
        for _ in 0..5 {
            append(500).await;
        }
        let line = now_micros();
        while now_micros() <= line {
            std::hint::spin_loop();
        }
        append(3).await;

        let pruned = outbox.prune(line + 1, false).await.unwrap();
        assert_eq!(pruned, 2500, "every event older than the line, across chunks");
        let Batch::Events(kept) = outbox.read_after(None, 100).await.unwrap() else {
            panic!("the oldest kept events are readable");
        };
        assert_eq!(kept.iter().map(|e| e.position).collect::<Vec<_>>(), [2501, 2502, 2503]);
        assert!(matches!(
            outbox.read_after(Some(Cursor(2499)), 100).await.unwrap(),
            Batch::Expired { oldest: Cursor(2500) }
        ));
        assert_eq!(outbox.prune(line + 1, false).await.unwrap(), 0, "nothing more is old enough");

        // With a relay, never past what it published.
        assert_eq!(outbox.prune(i64::MAX, true).await.unwrap(), 0, "nothing was published");

        // Pruned to empty, the outbox still never hands out a position twice.
        assert_eq!(outbox.prune(i64::MAX, false).await.unwrap(), 3);
        let Batch::Events(none) = outbox.read_after(Some(Cursor(2503)), 100).await.unwrap() else {
            panic!("the last cursor is still valid when everything was pruned");
        };
        assert!(none.is_empty());
        append(2).await;
        let Batch::Events(next) = outbox.read_after(Some(Cursor(2503)), 100).await.unwrap() else {
            panic!("the events after the last pruned are readable");
        };
        assert_eq!(next.iter().map(|e| e.position).collect::<Vec<_>>(), [2504, 2505]);
        assert_eq!(next.iter().map(|e| e.event.sequence).collect::<Vec<_>>(), [7, 7], "order-0 and order-1 go on: six events each before");
    }
}
