//! Retries of idempotent calls that failed with UNAVAILABLE.
//!
//! Only methods the builder was told are safe to repeat are retried, and only
//! when the failure says the call did not take effect: a `grpc-status: 14`
//! in the response headers (trailers-only error responses carry it there) or a
//! transport error from the channel. Backoff is gRFC A6's exponential backoff
//! with full jitter ([`FullJitter`]); a retry whose backoff would end at or
//! after the call's deadline is not attempted, so a retry never sleeps past the
//! deadline.
//!
//! Request bodies are streams that can be read once, so a retryable (unary)
//! call's body is buffered to [`Bytes`] and rebuilt for each attempt; calls to
//! other methods pass through untouched and unbuffered.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::retry::{Policy, Retry};
use tower::util::rng::{HasherRng, Rng as _};
use tower::{Service, ServiceExt};

use super::BoxError;
use super::context::CallDeadline;
use super::outgoing::stamp_timeout;

type Response = http::Response<tonic::body::Body>;

/// The gRPC status code UNAVAILABLE, as it appears in `grpc-status`.
const UNAVAILABLE: &str = "14";

/// How retries are paced and bounded.
#[derive(Clone, Debug)]
pub struct RetrySettings {
    /// Attempts in total, the first included; 1 disables retries.
    pub max_attempts: usize,
    /// The first backoff; each further one doubles, up to `max_backoff`.
    pub base_backoff: Duration,
    /// The largest backoff.
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// Retries calls to the configured methods over the inner service.
#[derive(Clone)]
pub struct RetryService<S> {
    inner: S,
    retryable: Arc<HashSet<String>>,
    settings: RetrySettings,
    backoff: FullJitter,
}

impl<S> std::fmt::Debug for RetryService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryService")
            .field("retryable", &self.retryable)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S> RetryService<S> {
    /// Retries calls to the full method paths in `retryable` over `inner`.
    pub fn new(
        inner: S,
        retryable: HashSet<String>,
        settings: RetrySettings,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            settings.max_attempts >= 1,
            "max_attempts must be at least 1"
        );
        anyhow::ensure!(
            settings.base_backoff <= settings.max_backoff,
            "the first backoff must not exceed the largest"
        );
        let backoff = FullJitter::new(settings.base_backoff, settings.max_backoff);
        Ok(Self {
            inner,
            retryable: Arc::new(retryable),
            settings,
            backoff,
        })
    }
}

impl<S> Service<http::Request<tonic::body::Body>> for RetryService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = Response, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if self.settings.max_attempts <= 1 || !self.retryable.contains(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        // The ready inner service goes with the call; a fresh clone stays.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let policy = RetryPolicy {
            retries_left: self.settings.max_attempts - 1,
            backoff: self.backoff.clone(),
        };
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let request = http::Request::from_parts(parts, body);
            let rebuild = inner.map_request(|request: http::Request<Bytes>| {
                request.map(|bytes| tonic::body::Body::new(Full::new(bytes)))
            });
            Retry::new(policy, rebuild).oneshot(request).await
        })
    }
}

/// gRFC A6 backoff with full jitter: the n-th retry waits a uniformly random
/// time in `[0, min(base · 2^(n-1), max)]`, so callers that failed together do
/// not retry together.
#[derive(Clone, Debug)]
pub struct FullJitter {
    base: Duration,
    max: Duration,
    retries: u32,
    rng: HasherRng,
}

impl FullJitter {
    /// Backoff for a call not yet retried.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            retries: 0,
            rng: HasherRng::default(),
        }
    }

    /// How long to wait before the next retry.
    pub fn next_backoff(&mut self) -> Duration {
        let cap = self
            .base
            .saturating_mul(2u32.saturating_pow(self.retries))
            .min(self.max);
        self.retries = self.retries.saturating_add(1);
        cap.mul_f64(self.rng.next_f64())
    }
}

/// One call's retry budget and backoff.
#[derive(Clone, Debug)]
struct RetryPolicy {
    retries_left: usize,
    backoff: FullJitter,
}

impl Policy<http::Request<Bytes>, Response, BoxError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut http::Request<Bytes>,
        result: &mut Result<Response, BoxError>,
    ) -> Option<Self::Future> {
        if self.retries_left == 0 || !is_unavailable(result) {
            return None;
        }
        let resume = tokio::time::Instant::now() + self.backoff.next_backoff();
        let sleep = tokio::time::sleep_until(resume);
        if let Some(CallDeadline(deadline)) = request.extensions().get::<CallDeadline>().copied() {
            if resume >= deadline {
                return None;
            }
            // The next attempt carries the time left when it starts, not when
            // the first attempt did.
            stamp_timeout(request, deadline - resume);
        }
        self.retries_left -= 1;
        Some(sleep)
    }

    fn clone_request(&mut self, request: &http::Request<Bytes>) -> Option<http::Request<Bytes>> {
        Some(request.clone())
    }
}

/// True when the call failed in a way that says it did not take effect.
fn is_unavailable(result: &Result<Response, BoxError>) -> bool {
    match result {
        Ok(response) => response
            .headers()
            .get(crate::observe::GRPC_STATUS)
            .is_some_and(|status| status.as_bytes() == UNAVAILABLE.as_bytes()),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn only_unavailable_and_transport_errors_are_retried() {
        let unavailable = Ok(tonic::Status::unavailable("down").into_http());
        let internal = Ok(tonic::Status::internal("bug").into_http());
        let ok = Ok(http::Response::new(tonic::body::Body::empty()));
        let transport: Result<Response, BoxError> = Err("connection refused".into());
        assert!(is_unavailable(&unavailable));
        assert!(!is_unavailable(&internal));
        assert!(!is_unavailable(&ok));
        assert!(is_unavailable(&transport));
    }

    #[tokio::test]
    async fn no_retry_whose_backoff_ends_after_the_deadline() {
        // A backoff drawn from [0, 1 s] against a 10 ms deadline; a clone of
        // the backoff draws what the policy will, so a rare draw under 20 ms
        // (which would legitimately retry) is replaced first.
        let mut backoff = FullJitter::new(Duration::from_secs(1), Duration::from_secs(1));
        while backoff.clone().next_backoff() < Duration::from_millis(20) {
            backoff = FullJitter::new(Duration::from_secs(1), Duration::from_secs(1));
        }
        let mut policy = RetryPolicy {
            retries_left: 5,
            backoff,
        };
        let mut request = http::Request::new(Bytes::new());
        request
            .extensions_mut()
            .insert(CallDeadline(Instant::now() + Duration::from_millis(10)));
        let mut result = Ok(tonic::Status::unavailable("down").into_http());
        assert!(policy.retry(&mut request, &mut result).is_none());
    }

    #[test]
    fn backoff_has_full_jitter_and_doubles_up_to_the_max() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(350);
        let mut third_retries = Vec::new();
        for _ in 0..500 {
            let mut backoff = FullJitter::new(base, max);
            assert!(backoff.next_backoff() <= base);
            assert!(backoff.next_backoff() <= base * 2);
            third_retries.push(backoff.next_backoff());
            // The fourth would be 800 ms; the max caps it.
            assert!(backoff.next_backoff() <= max);
        }
        assert!(third_retries.iter().all(|sleep| *sleep <= base * 4));
        // Full jitter: draws fall anywhere from 0, not only in [cap/2, cap].
        assert!(third_retries.iter().any(|sleep| *sleep < base));
        assert!(third_retries.iter().any(|sleep| *sleep > base * 3));
    }
}
