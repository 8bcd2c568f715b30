//! The NATS JetStream relay against a real nats-server (JetStream on): a
//! crash between the broker's PubAck and marking the row publishes again and
//! JetStream drops the duplicate; a broker that goes away and comes back
//! gets every event, in order, once. Without a server at 127.0.0.1:4222
//! (and `nats-server` on the PATH for the restart test) these tests print a
//! note and pass, unless `AGORA_REQUIRE_NATS` is set (`.ci/run` sets it and starts one).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agora_interceptors::outbox::relay::{RelayFault, RelaySettings, async_nats};
use agora_interceptors::outbox::{NewEvent, Outbox};
use agora_proto::events::v1 as ev;
use agora_testkit::nats::{Broker, assert_once_in_order, free_port, fresh_settings, spawn_relay};
use agora_testkit::{backend_test, eventually};

use crate::support::*;

const NATS: &str = agora_testkit::nats::NATS_ADDR;

/// Appends `n` OrderPlaced events for one order, committed.
async fn append(outbox: &Outbox, order: &str, n: usize) {
    let mut tx = outbox.database().pool().begin().await.unwrap();
    let events: Vec<_> = (0..n)
        .map(|_| {
            NewEvent::new(
                order,
                ev::event::Payload::OrderPlaced(ev::OrderPlaced {
                    order_id: order.into(),
                    ..Default::default()
                }),
            )
        })
        .collect();
    let appended = outbox.append(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    outbox.committed(appended);
}

/// Every event of the order stream, in stream order; the stream is then
/// deleted.
async fn stream_events(settings: &RelaySettings, url: &str) -> Vec<ev::Event> {
    let stream = settings.stream_name("agora/order");
    let events = agora_testkit::nats::stream_events(url, &stream).await;
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    js.delete_stream(stream).await.unwrap();
    events
}

backend_test! {
    async fn a_crash_between_puback_and_mark_is_a_duplicate_jetstream_drops(db: &TestDatabase) {
        if !agora_testkit::nats::nats_available(NATS).await {
            return;
        }
        let outbox = outbox_on(db).await;
        let settings = fresh_settings(&format!("nats://{NATS}"));
        append(&outbox, "order-1", 3).await;

        // The relay publishes the first two, then "crashes" after the second
        // PubAck, before marking anything.
        let crashed = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new(0));
        let fault: RelayFault = {
            let crashed = crashed.clone();
            let seen = seen.clone();
            Arc::new(move |_id: &str| {
                let mut seen = seen.lock().unwrap();
                *seen += 1;
                let crash = *seen == 2;
                if crash {
                    crashed.store(true, Ordering::SeqCst);
                }
                crash
            })
        };
        let (_, task) = spawn_relay(&outbox, &settings, Some(fault));
        tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap();
        assert!(crashed.load(Ordering::SeqCst));
        assert_eq!(outbox.unpublished().await.unwrap(), 3, "nothing marked before the crash");

        // Restarted, it publishes all three; JetStream drops the two repeats.
        let (stop, task) = spawn_relay(&outbox, &settings, None);
        eventually("every row published", Duration::from_secs(20), || async {
            (outbox.unpublished().await.unwrap() == 0).then_some(())
        })
        .await;
        stop.cancel();
        task.await.unwrap();
        let url = format!("nats://{NATS}");
        let events = stream_events(&settings, &url).await;
        let sequences: Vec<_> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, [1, 2, 3], "each event once, in order");
        let mut ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3);
    }
}

backend_test! {
    async fn events_wait_while_the_broker_is_down_and_all_arrive_once_in_order(db: &TestDatabase) {
        if !agora_testkit::nats::nats_available(NATS).await {
            return;
        }
        let port = free_port().await;
        let dir = tempfile::tempdir().unwrap();
        let Some(broker) = Broker::start(port, dir.path()).await else {
            return;
        };
        let outbox = outbox_on(db).await;
        let settings = fresh_settings(&broker.url());
        let (stop, task) = spawn_relay(&outbox, &settings, None);
        append(&outbox, "order-a", 5).await;
        eventually("the first events published", Duration::from_secs(20), || async {
            (outbox.unpublished().await.unwrap() == 0).then_some(())
        })
        .await;

        // The broker goes away; events keep being written and wait.
        broker.kill().await;
        for order in ["order-b", "order-c"] {
            append(&outbox, order, 4).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(outbox.unpublished().await.unwrap(), 8, "nothing published while the broker is down");

        // Back (same storage): everything arrives, in order, once.
        let broker = Broker::start(port, dir.path()).await.unwrap();
        eventually("every event published", Duration::from_secs(30), || async {
            (outbox.unpublished().await.unwrap() == 0).then_some(())
        })
        .await;
        stop.cancel();
        task.await.unwrap();
        let events = stream_events(&settings, &format!("nats://127.0.0.1:{}", broker.port)).await;
        assert_eq!(events.len(), 13, "none lost, none twice");
        let by_order = assert_once_in_order(&events);
        let lengths: Vec<_> = by_order.iter().map(|(order, events)| (order.as_str(), events.len())).collect();
        assert_eq!(lengths, [("order-a", 5), ("order-b", 4), ("order-c", 4)]);
        broker.kill().await;
    }
}
