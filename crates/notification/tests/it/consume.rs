//! Consuming the order and payment feeds: one notification per confirmed,
//! failed and cancelled order and per refund; exactly one per event through
//! a crash; dead letters after bounded tries, visible and replayable.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_proto::notification::v1 as pb;
use agora_proto::notification::v1::notification_service_client::NotificationServiceClient;
use agora_testkit::{backend_test, with_token};
use tonic::Code;

use crate::support::*;

backend_test! {
    async fn each_outcome_and_refund_notifies_its_customer_once(db: &TestDatabase) {
        let suite = TestSuite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 1200, 10).await;
        let (ada, ada_token) = customer(&suite, "ada@example.com").await;
        let (_, bob_token) = customer(&suite, "bob@example.com").await;
        let notifier = TestNotifier::default();
        let notes_db = TestDatabase::like(db).await;
        let server = start_notification(&suite, &notes_db, notifier.clone(), 3).await;

        let confirmed = place(&suite, &ada_token, "MUG", "tok_visa").await;
        let failed = place(&suite, &ada_token, "MUG", "tok_declined").await;
        cancel(&suite, &ada_token, &confirmed.order_id).await;

        let got = wait_for_notifications(&server, &ada_token, 4).await;
        let mut kinds: Vec<_> = got.iter().map(|n| (n.kind(), n.order_id.clone())).collect();
        kinds.sort();
        let mut want = vec![
            (pb::NotificationKind::OrderConfirmed, confirmed.order_id.clone()),
            (pb::NotificationKind::OrderFailed, failed.order_id.clone()),
            (pb::NotificationKind::OrderCancelled, confirmed.order_id.clone()),
            (pb::NotificationKind::PaymentRefunded, confirmed.order_id.clone()),
        ];
        want.sort();
        assert_eq!(kinds, want);
        assert!(got.iter().all(|n| n.user_id == ada && n.send_time.is_some()));
        // Newest first.
        let ids: Vec<_> = got.iter().map(|n| n.event_id.clone()).collect();
        let mut sorted = ids.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(ids, sorted);
        assert_eq!(notifier.recorded.sent().len(), 4);

        // Bob sees none of Ada's; an admin sees them all, or Ada's alone.
        assert!(notifications(&server, &bob_token, "").await.is_empty());
        let mut client = NotificationServiceClient::new(server.channel());
        let status = client
            .list_notifications(with_token(pb::ListNotificationsRequest { user_id: ada.clone(), ..Default::default() }, &bob_token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let admin = suite.keys.admin_token();
        assert_eq!(notifications(&server, &admin, "").await.len(), 4);
        assert_eq!(notifications(&server, &admin, &ada).await.len(), 4);
        server.stop().await;
        notes_db.cleanup().await;
        suite.stop().await;
    }
}

backend_test! {
    async fn a_crash_mid_batch_leaves_exactly_one_notification_per_confirmed_order(db: &TestDatabase) {
        let suite = TestSuite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 100, 100).await;
        let (_, token) = customer(&suite, "ada@example.com").await;
        let mut orders = Vec::new();
        for _ in 0..8 {
            orders.push(place(&suite, &token, "MUG", "tok_visa").await.order_id);
        }
        let notes_db = TestDatabase::like(db).await;

        // A slow notifier: the crash lands in the middle of the backlog.
        let first = TestNotifier { delay: Duration::from_millis(40), ..Default::default() };
        let server = start_notification(&suite, &notes_db, first.clone(), 3).await;
        agora_testkit::eventually("some notifications sent", Duration::from_secs(30), || {
            let sent = first.recorded.sent().len();
            async move { (sent >= 3).then_some(()) }
        })
        .await;
        server.crash().await;
        let before_crash = first.recorded.sent().len();
        assert!(before_crash < 8, "the crash came after the whole batch");

        let second = TestNotifier::default();
        let server = start_notification(&suite, &notes_db, second.clone(), 3).await;
        let got = wait_for_notifications(&server, &token, 8).await;
        let mut notified: Vec<_> = got.iter().map(|n| n.order_id.clone()).collect();
        notified.sort();
        orders.sort();
        assert_eq!(notified, orders, "exactly one notification per confirmed order");
        assert!(got.iter().all(|n| n.kind() == pb::NotificationKind::OrderConfirmed));
        // What was recorded before the crash was not sent again (at most the
        // one in flight when it crashed is).
        assert!(second.recorded.sent().len() <= 8 - before_crash + 1, "{} resent", second.recorded.sent().len());
        server.stop().await;
        notes_db.cleanup().await;
        suite.stop().await;
    }
}

backend_test! {
    async fn a_notification_that_keeps_failing_is_dead_lettered_then_replayed(db: &TestDatabase) {
        let suite = TestSuite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 100, 100).await;
        let (ada, ada_token) = customer(&suite, "ada@example.com").await;
        let (_, bob_token) = customer(&suite, "bob@example.com").await;
        let notifier = TestNotifier::default();
        *notifier.failing_user.lock().unwrap() = ada.clone();
        notifier.failing.store(true, Ordering::SeqCst);
        let notes_db = TestDatabase::like(db).await;
        let server = start_notification(&suite, &notes_db, notifier.clone(), 3).await;

        let ada_order = place(&suite, &ada_token, "MUG", "tok_visa").await;
        // The feed moves on past the dead letter.
        let bob_order = place(&suite, &bob_token, "MUG", "tok_visa").await;
        let bobs = wait_for_notifications(&server, &bob_token, 1).await;
        assert_eq!(bobs[0].order_id, bob_order.order_id);
        assert!(notifications(&server, &ada_token, "").await.is_empty());

        let admin = suite.keys.admin_token();
        let mut client = NotificationServiceClient::new(server.channel());
        let dead = dead_letters(&server, &admin).await;
        assert_eq!(dead.len(), 1, "{dead:#?}");
        assert_eq!(dead[0].attempts, 3);
        assert_eq!(dead[0].event_type, "agora.order.OrderConfirmed");
        assert_eq!(dead[0].source, "agora/order");
        assert!(dead[0].last_error.contains("refused"), "{dead:#?}");
        // Customers may not see or replay dead letters.
        let status = client
            .list_dead_letters(with_token(pb::ListDeadLettersRequest::default(), &ada_token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);

        // Still failing: the replay fails and the dead letter stays.
        let replay = pb::ReplayDeadLetterRequest { event_id: dead[0].event_id.clone() };
        let status = client.replay_dead_letter(with_token(replay.clone(), &admin)).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        // Fixed: the replay sends it, once.
        notifier.failing.store(false, Ordering::SeqCst);
        let sent = client.replay_dead_letter(with_token(replay.clone(), &admin)).await.unwrap().into_inner();
        assert_eq!(sent.notification.unwrap().order_id, ada_order.order_id);
        let status = client.replay_dead_letter(with_token(replay, &admin)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let adas = notifications(&server, &ada_token, "").await;
        assert_eq!(adas.len(), 1);
        assert!(dead_letters(&server, &admin).await.is_empty());
        server.stop().await;
        notes_db.cleanup().await;
        suite.stop().await;
    }
}

backend_test! {
    async fn two_replicas_on_one_database_notify_once_and_one_goes_on_when_the_other_dies(db: &TestDatabase) {
        let suite = TestSuite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 100, 100).await;
        let (_, token) = customer(&suite, "ada@example.com").await;
        let notes_db = TestDatabase::like(db).await;
        // Each replica's hold on a feed lasts a second unrenewed (testkit).
        let replica = |notifier: TestNotifier| {
            agora_testkit::services::start_notification(
                &notes_db,
                &suite.keys,
                suite.order.as_ref().unwrap().addr(),
                suite.payment.addr(),
                Arc::new(notifier),
                |_| {},
            )
        };
        let (first, second) = (TestNotifier::default(), TestNotifier::default());
        let first_server = replica(first.clone()).await;
        let second_server = replica(second.clone()).await;

        let mut orders = Vec::new();
        for _ in 0..4 {
            orders.push(place(&suite, &token, "MUG", "tok_visa").await.order_id);
        }
        wait_for_notifications(&second_server, &token, 4).await;
        // One replica consumed the order feed: each was sent once.
        let (a, b) = (first.recorded.sent().len(), second.recorded.sent().len());
        assert_eq!(a + b, 4, "sent by both replicas: {a} + {b}");
        assert!(a == 0 || b == 0, "both replicas consumed the feed: {a} + {b}");

        // The one consuming dies; the other takes over.
        let (survivor, survivor_server) = if a > 0 {
            first_server.crash().await;
            (second, second_server)
        } else {
            second_server.crash().await;
            (first, first_server)
        };
        let before = survivor.recorded.sent().len();
        for _ in 0..4 {
            orders.push(place(&suite, &token, "MUG", "tok_visa").await.order_id);
        }
        let got = wait_for_notifications(&survivor_server, &token, 8).await;
        let mut notified: Vec<_> = got.iter().map(|n| n.order_id.clone()).collect();
        notified.sort();
        orders.sort();
        assert_eq!(notified, orders, "exactly one notification per order");
        assert_eq!(survivor.recorded.sent().len(), before + 4, "the survivor sent the rest");
        survivor_server.stop().await;
        notes_db.cleanup().await;
        suite.stop().await;
    }
}

backend_test! {
    async fn replicas_recording_the_same_event_at_once_store_one_notification(db: &TestDatabase) {
        use agora_notification::domain::{Delivery, Kind, Notification};
        use agora_notification::store::{NotificationStore, Processed};

        // Two replicas' stores on one database, racing on the same events.
        let pools = agora_interceptors::db::PoolSettings::default();
        let open = || agora_interceptors::db::Database::open(db.url(), &pools, &agora_notification::MIGRATIONS);
        let stores = [NotificationStore::new(open().await.unwrap()), NotificationStore::new(open().await.unwrap())];
        for _ in 0..10 {
            let event_id = uuid::Uuid::now_v7().to_string();
            let notification = Notification {
                event_id: event_id.clone(),
                user_id: "ada".into(),
                kind: Kind::OrderConfirmed,
                order_id: event_id.clone(),
                message: "confirmed".into(),
            };
            let delivery = Delivery {
                event_id: event_id.clone(),
                source: "agora/order".into(),
                event_type: "agora.order.OrderConfirmed".into(),
                cursor: String::new(),
                encoded: Vec::new(),
                notification: Ok(Some(notification.clone())),
            };
            let batch = [(&delivery, Processed::Sent(&notification))];
            let (a, b) = tokio::join!(
                stores[0].record(&delivery.source, "", &batch),
                stores[1].record(&delivery.source, "", &batch),
            );
            let fresh = [a.unwrap()[0], b.unwrap()[0]];
            assert_eq!(fresh.iter().filter(|f| **f).count(), 1, "exactly one replica recorded it: {fresh:?}");
        }
        let stored = stores[0].notifications(None, None, 100).await.unwrap();
        assert_eq!(stored.len(), 10, "one notification per event");
    }
}

backend_test! {
    async fn a_batch_is_recorded_in_one_transaction_with_its_cursor(db: &TestDatabase) {
        use agora_notification::domain::{Delivery, Kind, Notification};
        use agora_notification::store::{NotificationStore, Processed};

        let pools = agora_interceptors::db::PoolSettings::default();
        let store = NotificationStore::new(
            agora_interceptors::db::Database::open(db.url(), &pools, &agora_notification::MIGRATIONS).await.unwrap(),
        );
        let delivery = |cursor: &str, notification: Option<&Notification>| {
            let event_id = notification.map_or_else(|| uuid::Uuid::now_v7().to_string(), |n| n.event_id.clone());
            Delivery {
                event_id,
                source: "agora/order".into(),
                event_type: "agora.order.OrderConfirmed".into(),
                cursor: cursor.into(),
                encoded: vec![1, 2, 3],
                notification: Ok(notification.cloned()),
            }
        };
        let notification = |n: u32| Notification {
            event_id: uuid::Uuid::now_v7().to_string(),
            user_id: format!("customer-{n}"),
            kind: Kind::OrderConfirmed,
            order_id: format!("order-{n}"),
            message: format!("order {n} confirmed"),
        };
        let (one, two) = (notification(1), notification(2));
        let (first, again, dead) = (delivery("c1", Some(&one)), delivery("c2", Some(&one)), delivery("c3", None));
        let batch = [
            (&first, Processed::Sent(&one)),
            (&again, Processed::Sent(&one)),
            (&dead, Processed::Dead { attempts: 3, error: "smtp: 550" }),
        ];
        let fresh = store.record("agora/order", "c3", &batch).await.unwrap();
        assert_eq!(fresh, [true, false, true], "an event twice in one batch is recorded once");
        assert_eq!(store.cursor("agora/order").await.unwrap(), "c3");
        let seen = store.seen(&[&one.event_id, &dead.event_id, &two.event_id]).await.unwrap();
        assert!(seen.contains(&one.event_id) && seen.contains(&dead.event_id) && !seen.contains(&two.event_id), "{seen:?}");
        let sent = store.notifications(None, None, 10).await.unwrap();
        assert_eq!(sent.iter().map(|s| &s.notification).collect::<Vec<_>>(), [&one]);
        let dead_letter = store.dead_letter(&dead.event_id).await.unwrap().expect("the dead letter");
        assert_eq!((dead_letter.attempts, dead_letter.last_error.as_str(), dead_letter.encoded), (3, "smtp: 550", vec![1, 2, 3]));

        // A batch of redeliveries writes nothing new but still moves the cursor.
        let fresh = store.record("agora/order", "c4", &batch[..1]).await.unwrap();
        assert_eq!(fresh, [false]);
        assert_eq!(store.cursor("agora/order").await.unwrap(), "c4");
        assert_eq!(store.notifications(None, None, 10).await.unwrap().len(), 1);
    }
}
