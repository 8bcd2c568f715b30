//! With NATS: the notification service reads the
//! order stream through its JetStream durable consumers (one per consumed
//! type), one notification per event, also across a crash; an upgrade from
//! the single durable consumer of earlier versions goes on after what it
//! acknowledged; an event whose notification keeps
//! failing is a dead letter in the table and, once, on the dead-letter
//! stream, and is replayed once. Needs a nats-server with JetStream at
//! 127.0.0.1:4222; without one it prints a note and passes, unless
//! `AGORA_REQUIRE_NATS` is set.

use std::sync::Arc;
use std::time::Duration;

use agora_interceptors::db::Database;
use agora_interceptors::outbox::relay::{self, RelaySettings};
use agora_interceptors::outbox::{NewEvent, Outbox};
use std::sync::atomic::Ordering;

use agora_notification::downstream::{DLQ_SOURCE, LEGACY_DURABLE, durable_name};
use agora_notification::{Notifier, RecordingNotifier};
use agora_proto::events::v1 as ev;
use agora_proto::notification::v1 as pb;
use agora_proto::notification::v1::notification_service_client::NotificationServiceClient;
use agora_testkit::nats::{fresh_settings, spawn_relay};
use agora_testkit::{Keys, backend_test, eventually, services, with_token};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const NATS: &str = agora_testkit::nats::NATS_ADDR;

backend_test! {
    async fn the_durable_consumer_notifies_once_per_event_across_a_crash(db: &TestDatabase) {
        if !agora_testkit::nats::nats_available(NATS).await {
            return;
        }
        // An order outbox with five confirmed orders, published by a relay.
        let settings = fresh_settings(&format!("nats://{NATS}"));
        let user = uuid::Uuid::now_v7().to_string();
        let (stop_relay, relay) = confirmed_orders(db, &settings, &[user.as_str(); 5]).await;

        let keys = Keys::new();
        let notes_db = TestDatabase::like(db).await;
        let start = |notifier: RecordingNotifier| start_on_nats(&notes_db, &keys, &settings, Arc::new(notifier), 5);
        let first = RecordingNotifier::new();
        let server = start(first.clone()).await;
        eventually("some notifications", Duration::from_secs(30), || {
            let sent = first.sent().len();
            async move { (sent >= 2).then_some(()) }
        })
        .await;
        server.crash().await;

        let server = start(RecordingNotifier::new()).await;
        let admin = keys.admin_token();
        let got = wait_for_notifications(&server, &admin, 5).await;
        let mut orders: Vec<_> = got.iter().map(|n| n.order_id.clone()).collect();
        orders.sort();
        orders.dedup();
        assert_eq!(orders.len(), 5, "one notification per event");
        server.stop().await;
        stop_relay.cancel();
        relay.await.unwrap();
        let js = relay::async_nats::jetstream::new(relay::async_nats::connect(settings.url.as_str()).await.unwrap());
        js.delete_stream(settings.stream_name("agora/order")).await.unwrap();
        notes_db.cleanup().await;
    }
}

/// The notification service on `db`, reading the streams of `settings`'
/// NATS server, trying each notification `max_attempts` times.
fn start_on_nats<'a>(
    db: &'a TestDatabase,
    keys: &'a Keys,
    settings: &RelaySettings,
    notifier: Arc<dyn Notifier>,
    max_attempts: u32,
) -> impl std::future::Future<Output = TestServer> + 'a {
    let settings = settings.clone();
    services::start_notification(
        db,
        keys,
        "127.0.0.1:9".parse().unwrap(),
        "127.0.0.1:9".parse().unwrap(),
        notifier,
        move |config| {
            config.notify_max_attempts = max_attempts;
            config.serve.nats_url = Some(settings.url);
            config.serve.nats_subject_prefix = settings.prefix;
        },
    )
}

/// Appends one OrderConfirmed per customer in `users` to a fresh order
/// outbox on `db` and starts a relay publishing it with `settings`.
async fn confirmed_orders(
    db: &TestDatabase,
    settings: &RelaySettings,
    users: &[&str],
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let database = Database::open(db.url(), &Default::default(), &agora_order::MIGRATIONS)
        .await
        .unwrap();
    let outbox = Outbox::new(database, "order");
    let mut tx = outbox.database().pool().begin().await.unwrap();
    let events: Vec<_> = users
        .iter()
        .map(|user| {
            let order = uuid::Uuid::now_v7().to_string();
            NewEvent::new(
                order.clone(),
                ev::event::Payload::OrderConfirmed(ev::OrderConfirmed {
                    order_id: order,
                    user_id: (*user).to_owned(),
                    ..Default::default()
                }),
            )
        })
        .collect();
    let appended = outbox.append(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    outbox.committed(appended);
    spawn_relay(&outbox, settings, None)
}

backend_test! {
    async fn a_dead_letter_is_on_the_dead_letter_stream_once_and_replays_once(db: &TestDatabase) {
        if !agora_testkit::nats::nats_available(NATS).await {
            return;
        }
        let settings = fresh_settings(&format!("nats://{NATS}"));
        let (ada, bob) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
        let (stop_relay, relay) = confirmed_orders(db, &settings, &[&ada, &bob]).await;
        let notifier = TestNotifier::default();
        *notifier.failing_user.lock().unwrap() = ada.clone();
        notifier.failing.store(true, Ordering::SeqCst);

        let keys = Keys::new();
        let notes_db = TestDatabase::like(db).await;
        let start = |notifier: TestNotifier| start_on_nats(&notes_db, &keys, &settings, Arc::new(notifier), 3);
        let server = start(notifier.clone()).await;
        let admin = keys.admin_token();
        // Bob's is sent; Ada's is dead after three tries, and the stream moves on.
        let sent = wait_for_notifications(&server, &admin, 1).await;
        assert_eq!(sent[0].user_id, bob);
        let dead = eventually("the dead letter", Duration::from_secs(30), || async {
            let dead = dead_letters(&server, &admin).await;
            (!dead.is_empty()).then_some(dead)
        })
        .await;
        assert_eq!(dead.len(), 1, "{dead:#?}");
        assert_eq!(dead[0].attempts, 3);

        // On the dead-letter stream: the event, with its failure; and the
        // message terminated: the durable consumer has nothing pending.
        let js = relay::async_nats::jetstream::new(relay::async_nats::connect(settings.url.as_str()).await.unwrap());
        let order_stream = js.get_stream(settings.stream_name("agora/order")).await.unwrap();
        let settled = || async {
            let info = order_stream.consumer_info(durable_name("agora.order.OrderConfirmed")).await.unwrap();
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        };
        eventually("the durable consumer settled", Duration::from_secs(30), settled).await;
        let dlq = js.get_stream(settings.stream_name(DLQ_SOURCE)).await.unwrap();
        let dead_letter_once = || {
            let mut dlq = dlq.clone();
            let (event_id, settings) = (dead[0].event_id.clone(), settings.clone());
            async move {
                assert_eq!(dlq.info().await.unwrap().state.messages, 1, "one dead letter on the stream");
                let message = dlq.get_last_raw_message_by_subject(&format!("{}agora.notification.dead_letter.agora.order.OrderConfirmed", settings.prefix)).await.unwrap();
                let event = <ev::Event as prost::Message>::decode(message.payload).unwrap();
                assert_eq!(event.id, event_id);
                let headers = message.headers;
                assert_eq!(headers.get(relay::async_nats::header::NATS_MESSAGE_ID).map(|v| v.as_str()), Some(event_id.as_str()));
                assert_eq!(headers.get("Agora-Attempts").map(|v| v.as_str()), Some("3"));
                assert_eq!(headers.get("Agora-Event-Source").map(|v| v.as_str()), Some("agora/order"));
                assert!(headers.get("Agora-Error").is_some_and(|v| v.as_str().contains("refused")), "{headers:?}");
            }
        };
        dead_letter_once().await;

        // A restart redelivers nothing and publishes no second dead letter.
        server.crash().await;
        let server = start(notifier.clone()).await;
        let sent = wait_for_notifications(&server, &admin, 1).await;
        assert_eq!(sent[0].user_id, bob);
        eventually("the durable consumer settled", Duration::from_secs(30), settled).await;
        dead_letter_once().await;

        // The notifier recovers: the replay sends it, once.
        notifier.failing.store(false, Ordering::SeqCst);
        let mut client = NotificationServiceClient::new(server.channel());
        let replayed = client
            .replay_dead_letter(with_token(pb::ReplayDeadLetterRequest { event_id: dead[0].event_id.clone() }, &admin))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(replayed.notification.unwrap().user_id, ada);
        let all = wait_for_notifications(&server, &admin, 2).await;
        assert_eq!(all.iter().filter(|n| n.user_id == ada).count(), 1);
        assert_eq!(notifier.recorded.sent().iter().filter(|n| n.user_id == ada).count(), 1);

        server.stop().await;
        stop_relay.cancel();
        relay.await.unwrap();
        js.delete_stream(settings.stream_name("agora/order")).await.unwrap();
        js.delete_stream(settings.stream_name(DLQ_SOURCE)).await.unwrap();
        notes_db.cleanup().await;
    }
}

backend_test! {
    async fn an_upgrade_from_the_single_durable_consumer_goes_on_after_what_it_acknowledged(db: &TestDatabase) {
        if !agora_testkit::nats::nats_available(NATS).await {
            return;
        }
        use futures::StreamExt;
        use relay::async_nats::jetstream::consumer::{AckPolicy, pull};

        // Three confirmed orders on the stream; an earlier version's single
        // consumer processed and acknowledged the first two.
        let settings = fresh_settings(&format!("nats://{NATS}"));
        let users: Vec<String> = (0..3).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let (stop_relay, relay) = confirmed_orders(db, &settings, &users.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let js = relay::async_nats::jetstream::new(relay::async_nats::connect(settings.url.as_str()).await.unwrap());
        let order_stream = eventually("the three events on the stream", Duration::from_secs(30), || {
            let js = js.clone();
            let name = settings.stream_name("agora/order");
            async move {
                let mut stream = js.get_stream(name).await.ok()?;
                (stream.info().await.ok()?.state.messages == 3).then_some(stream)
            }
        })
        .await;
        let legacy = order_stream
            .create_consumer(pull::Config {
                durable_name: Some(LEGACY_DURABLE.to_owned()),
                ack_policy: AckPolicy::Explicit,
                filter_subject: settings.stream_subjects("agora/order"),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut batch = legacy.fetch().max_messages(2).messages().await.unwrap();
        while let Some(message) = batch.next().await {
            message.unwrap().double_ack().await.unwrap();
        }

        let keys = Keys::new();
        let notes_db = TestDatabase::like(db).await;
        let server = start_on_nats(&notes_db, &keys, &settings, Arc::new(RecordingNotifier::new()), 3).await;
        let admin = keys.admin_token();
        let sent = wait_for_notifications(&server, &admin, 1).await;
        eventually("the per-type consumer settled", Duration::from_secs(30), || async {
            let info = order_stream.consumer_info(durable_name("agora.order.OrderConfirmed")).await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        })
        .await;
        let sent_now = wait_for_notifications(&server, &admin, 1).await;
        assert_eq!(sent_now.len(), 1, "only the event the old consumer had not acknowledged: {sent_now:#?}");
        assert_eq!(sent[0].user_id, users[2]);
        assert!(order_stream.consumer_info(LEGACY_DURABLE).await.is_err(), "the old consumer is deleted");

        server.stop().await;
        stop_relay.cancel();
        relay.await.unwrap();
        js.delete_stream(settings.stream_name("agora/order")).await.unwrap();
        notes_db.cleanup().await;
    }
}
