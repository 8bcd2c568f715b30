//! The NATS JetStream server the broker tests use: a local `nats-server -js`
//! at [`NATS_ADDR`]. Without one the tests print a note and pass (a user's
//! fresh machine), unless `AGORA_REQUIRE_NATS` is set, as `.ci/run` does
//! after starting one.

use std::time::Duration;

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
