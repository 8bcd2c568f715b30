//! The NATS JetStream servers the broker tests use: the shared local
//! `nats-server -js` at [`NATS_ADDR`], and a private [`Broker`] a test may
//! kill and restart (an outage). Without them the tests print a note and
//! pass (a user's fresh machine), unless `AGORA_REQUIRE_NATS` is set, as
//! `.ci/run` does after starting one.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use agora_interceptors::outbox::Outbox;
use agora_interceptors::outbox::relay::{self, RelayFault, RelaySettings, async_nats};
use agora_proto::events::v1 as ev;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::eventually;

/// Where the broker tests expect a nats-server with JetStream on.
pub const NATS_ADDR: &str = "127.0.0.1:4222";

/// Whether a NATS server answers at `addr`; without one, a note, or with
/// `AGORA_REQUIRE_NATS` set, a failure.
pub async fn nats_available(addr: &str) -> bool {
    let up = matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    );
    if !up {
        assert!(
            std::env::var_os("AGORA_REQUIRE_NATS").is_none(),
            "AGORA_REQUIRE_NATS is set but no NATS server answers at {addr}"
        );
        eprintln!(
            "note: no NATS server at {addr} (nats-server -js -a 127.0.0.1 -p 4222); skipping"
        );
    }
    up
}

/// Relay settings for the NATS server at `url` (`nats://host:port`) with a
/// fresh subject prefix, so runs sharing a server never share a stream.
pub fn fresh_settings(url: &str) -> RelaySettings {
    RelaySettings {
        url: url.to_owned(),
        prefix: format!("t{}.", uuid::Uuid::now_v7().simple()),
    }
}

/// Runs `outbox`'s NATS relay with `settings` (and the test `fault`) until
/// the returned token is cancelled.
pub fn spawn_relay(
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

/// A private nats-server with JetStream on a port of its own, storing in a
/// directory the test keeps, so it can be killed (an outage) and started
/// again on the same port and storage. Killed when dropped.
#[derive(Debug)]
pub struct Broker {
    child: std::process::Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// Starts `nats-server -js` on `port` storing in `dir` and waits until
    /// it listens. `None` (after a note) when `nats-server` is not on the
    /// PATH; a failure then if `AGORA_REQUIRE_NATS` is set.
    pub async fn start(port: u16, dir: &Path) -> Option<Broker> {
        let child = match std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                assert!(
                    std::env::var_os("AGORA_REQUIRE_NATS").is_none(),
                    "AGORA_REQUIRE_NATS is set but nats-server cannot be started: {error}"
                );
                eprintln!("note: nats-server is not on the PATH ({error}); skipping");
                return None;
            }
        };
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

    /// Its URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (no clean shutdown: an outage).
    pub async fn kill(mut self) {
        self.child.kill().expect("kill nats-server");
        self.child.wait().expect("reap nats-server");
    }
}

/// A port nothing listens on now (bound, then closed), for a [`Broker`].
pub async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// Every event on the JetStream stream `stream` of the NATS server at
/// `url`, decoded, in stream order.
pub async fn stream_events(url: &str, stream: &str) -> Vec<ev::Event> {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stream).await.expect("the stream");
    let state = stream
        .info()
        .await
        .expect("the stream's state")
        .state
        .clone();
    let mut events = Vec::new();
    if state.messages == 0 {
        return events;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let message = stream
            .get_raw_message(sequence)
            .await
            .expect("a stream message");
        events.push(ev::Event::decode(message.payload).expect("an event"));
    }
    events
}

/// Asserts that `events` (a stream's, in stream order) hold each event id
/// once and each aggregate's events in their sequence order from 1 without
/// a gap; returns them by aggregate (`subject`).
pub fn assert_once_in_order(events: &[ev::Event]) -> BTreeMap<String, Vec<ev::Event>> {
    let mut ids = HashSet::new();
    for event in events {
        assert!(
            ids.insert(&event.id),
            "event {} twice on the stream",
            event.id
        );
    }
    let mut by_aggregate: BTreeMap<String, Vec<ev::Event>> = BTreeMap::new();
    for event in events {
        by_aggregate
            .entry(event.subject.clone())
            .or_default()
            .push(event.clone());
    }
    for (aggregate, events) in &by_aggregate {
        let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
        let expected: Vec<i64> = (1..=events.len() as i64).collect();
        assert_eq!(
            sequences, expected,
            "the events of {aggregate} in order, no gap"
        );
    }
    by_aggregate
}
