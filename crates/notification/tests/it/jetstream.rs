//! With NATS: the notification service reads the
//! order stream through its JetStream durable consumer, one notification
//! per event, also across a crash. Needs a nats-server with JetStream at
//! 127.0.0.1:4222; without one it prints a note and passes, unless
//! `AGORA_REQUIRE_NATS` is set.

use std::sync::Arc;
use std::time::Duration;

use agora_interceptors::db::Database;
use agora_interceptors::outbox::relay::{self, RelaySettings};
use agora_interceptors::outbox::{NewEvent, Outbox};
use agora_notification::RecordingNotifier;
use agora_proto::events::v1 as ev;
use agora_testkit::{Keys, backend_test, eventually, services};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const NATS: &str = agora_testkit::nats::NATS_ADDR;

backend_test! {
    async fn the_durable_consumer_notifies_once_per_event_across_a_crash(db: &TestDatabase) {
        if !agora_testkit::nats::nats_available(NATS).await {
            return;
        }
        // An order outbox with five confirmed orders, published by a relay.
        let database = Database::open(db.url(), &Default::default(), &agora_order::MIGRATIONS).await.unwrap();
        let outbox = Outbox::new(database, "order");
        let settings = RelaySettings { url: format!("nats://{NATS}"), prefix: format!("t{}.", uuid::Uuid::now_v7().simple()) };
        let user = uuid::Uuid::now_v7().to_string();
        let mut tx = outbox.database().pool().begin().await.unwrap();
        let events: Vec<_> = (0..5)
            .map(|_| {
                let order = uuid::Uuid::now_v7().to_string();
                NewEvent::new(
                    order.clone(),
                    ev::event::Payload::OrderConfirmed(ev::OrderConfirmed { order_id: order, user_id: user.clone(), ..Default::default() }),
                )
            })
            .collect();
        let appended = outbox.append(&mut tx, &events).await.unwrap();
        tx.commit().await.unwrap();
        outbox.committed(appended);
        let stop_relay = CancellationToken::new();
        let relay = tokio::spawn(relay::run(outbox.clone(), settings.clone(), relay::RelayMetrics::default(), None, stop_relay.clone()));

        let keys = Keys::new();
        let notes_db = TestDatabase::like(db).await;
        let start = |notifier: RecordingNotifier| {
            let settings = settings.clone();
            services::start_notification(
                &notes_db,
                &keys,
                "127.0.0.1:9".parse().unwrap(),
                "127.0.0.1:9".parse().unwrap(),
                Arc::new(notifier),
                move |config| {
                    config.serve.nats_url = Some(settings.url.clone());
                    config.serve.nats_subject_prefix = settings.prefix.clone();
                },
            )
        };
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
