//! The NATS JetStream relay against a real nats-server (JetStream on): a
//! crash between the broker's PubAck and marking the row publishes again and
//! JetStream drops the duplicate; a broker that goes away and comes back
//! gets every event, in order, once. Without a server at 127.0.0.1:4222
//! (and `nats-server` on the PATH for the restart test) these tests print a
//! note and pass, unless `AGORA_REQUIRE_NATS` is set (`.ci/run` sets it and starts one).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agora_interceptors::outbox::relay::{self, RelayFault, RelaySettings, async_nats};
use agora_interceptors::outbox::{NewEvent, Outbox};
use agora_proto::events::v1 as ev;
use agora_testkit::{backend_test, eventually};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::support::*;

const NATS: &str = agora_testkit::nats::NATS_ADDR;

/// Settings with a fresh subject prefix, so runs never share a stream.
fn settings(url: &str) -> RelaySettings {
    RelaySettings {
        url: format!("nats://{url}"),
        prefix: format!("t{}.", uuid::Uuid::now_v7().simple()),
    }
}

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

async fn unpublished(outbox: &Outbox) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(outbox.database().pool())
        .await
        .unwrap()
}

/// Every message of the context's stream, decoded, in stream order.
async fn stream_events(settings: &RelaySettings, url: &str) -> Vec<ev::Event> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(settings.stream_name("agora/order"))
        .await
        .unwrap();
    let count = stream.info().await.unwrap().state.messages;
    let mut events = Vec::new();
    for sequence in 1..=count {
        let message = stream.get_raw_message(sequence).await.unwrap();
        events.push(ev::Event::decode(message.payload).unwrap());
    }
    js.delete_stream(settings.stream_name("agora/order"))
        .await
        .unwrap();
    events
}

fn spawn_relay(
    outbox: &Outbox,
    settings: &RelaySettings,
    fault: Option<RelayFault>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay::run(
        outbox.clone(),
        settings.clone(),
        relay::RelayMetrics::default(),
        fault,
        stop.clone(),
    ));
    (stop, task)
}

backend_test! {
    async fn a_crash_between_puback_and_mark_is_a_duplicate_jetstream_drops(db: &TestDatabase) {
        if !agora_testkit::nats::nats_available(NATS).await {
            return;
        }
        let outbox = outbox_on(db).await;
        let settings = settings(NATS);
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
        assert_eq!(unpublished(&outbox).await, 3, "nothing marked before the crash");

        // Restarted, it publishes all three; JetStream drops the two repeats.
        let (stop, task) = spawn_relay(&outbox, &settings, None);
        eventually("every row published", Duration::from_secs(20), || async {
            (unpublished(&outbox).await == 0).then_some(())
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

/// A nats-server with JetStream on a free port, storing in `dir`; killed
/// when dropped.
struct Broker {
    child: std::process::Child,
    port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    async fn start(port: u16, dir: &std::path::Path) -> Option<Broker> {
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let broker = Broker { child, port };
        eventually("nats-server to listen", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await;
        Some(broker)
    }

    async fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

backend_test! {
    async fn events_wait_while_the_broker_is_down_and_all_arrive_once_in_order(db: &TestDatabase) {
        if !agora_testkit::nats::nats_available(NATS).await {
            return;
        }
        let port = dead_address().await.port();
        let dir = tempfile::tempdir().unwrap();
        let Some(broker) = Broker::start(port, dir.path()).await else {
            assert!(std::env::var_os("AGORA_REQUIRE_NATS").is_none(), "AGORA_REQUIRE_NATS is set but nats-server is not on the PATH");
            eprintln!("note: nats-server is not on the PATH; skipping");
            return;
        };
        let outbox = outbox_on(db).await;
        let settings = settings(&format!("127.0.0.1:{}", broker.port));
        let (stop, task) = spawn_relay(&outbox, &settings, None);
        append(&outbox, "order-a", 5).await;
        eventually("the first events published", Duration::from_secs(20), || async {
            (unpublished(&outbox).await == 0).then_some(())
        })
        .await;

        // The broker goes away; events keep being written and wait.
        broker.stop().await;
        for order in ["order-b", "order-c"] {
            append(&outbox, order, 4).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(unpublished(&outbox).await, 8, "nothing published while the broker is down");

        // Back (same storage): everything arrives, in order, once.
        let broker = Broker::start(port, dir.path()).await.unwrap();
        eventually("every event published", Duration::from_secs(30), || async {
            (unpublished(&outbox).await == 0).then_some(())
        })
        .await;
        stop.cancel();
        task.await.unwrap();
        let events = stream_events(&settings, &format!("nats://127.0.0.1:{}", broker.port)).await;
        assert_eq!(events.len(), 13, "none lost, none twice");
        for order in ["order-a", "order-b", "order-c"] {
            let sequences: Vec<_> = events.iter().filter(|e| e.subject == order).map(|e| e.sequence).collect();
            let expected: Vec<i64> = (1..=sequences.len() as i64).collect();
            assert_eq!(sequences, expected, "{order} in order");
        }
        broker.stop().await;
    }
}
