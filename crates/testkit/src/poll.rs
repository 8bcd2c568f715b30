//! Waiting for something to become true without sleeping a fixed time:
//! poll it, briefly, until a deadline.

use std::future::Future;
use std::time::Duration;

/// How long to wait between two looks.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it answers `Some`, and returns that; panics naming
/// `what` when `within` has passed first.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {within:?} for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
