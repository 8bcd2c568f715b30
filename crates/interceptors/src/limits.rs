//! Protection against too much work: a concurrency limit that sheds load, a
//! per-principal rate limit, and a panic guard.
//!
//! Each answers with the status gRPC defines for it: RESOURCE_EXHAUSTED (with a
//! `RetryInfo` when a retry time is known) for shed or limited calls, INTERNAL for
//! a panicking handler, which fails only that call and leaves the connection and
//! every other stream on it alive.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{Either, Ready, ready};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::Status;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};

use crate::api::errors::resource_exhausted;
use crate::auth::Principal;

type HttpResponse = http::Response<tonic::body::Body>;

/// Per-caller token buckets. foldhash instead of the default SipHash: it is
/// looked up on every call, and the keys are verified subjects or peer
/// addresses, not strings a caller can choose freely.
type KeyedLimiter = DefaultKeyedRateLimiter<
    CallerKey,
    NoOpMiddleware<<DefaultClock as Clock>::Instant>,
    foldhash::fast::RandomState,
>;

// === concurrency limit ===

/// Serves at most `limit` calls at once and refuses the rest at once with
/// RESOURCE_EXHAUSTED, rather than queueing them until their deadlines pass.
///
/// Written here rather than taken from tower: `tower::load_shed` reports an
/// `Overloaded` error that tonic turns into UNKNOWN, not RESOURCE_EXHAUSTED.
/// The count is one atomic, not a `tokio::sync::Semaphore`, whose permits
/// take a mutex to give back (a measurable part of every call, since nothing
/// here ever waits for a permit).
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    permits: Arc<InFlight>,
}

impl ConcurrencyLimitLayer {
    /// At most `limit` calls in flight.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(InFlight {
                count: AtomicUsize::new(0),
                limit: limit.max(1),
            }),
        }
    }
}

/// Calls in flight, and the most allowed at once.
#[derive(Debug)]
pub struct InFlight {
    count: AtomicUsize,
    limit: usize,
}

impl InFlight {
    /// A place for one more call, unless all are taken.
    fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut current = self.count.load(Ordering::Relaxed);
        loop {
            if current >= self.limit {
                return None;
            }
            match self.count.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Permit(self.clone())),
                Err(actual) => current = actual,
            }
        }
    }
}

/// One call's place among the limit, given back when dropped.
#[derive(Debug)]
pub struct Permit(Arc<InFlight>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Release);
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// See [`ConcurrencyLimitLayer`].
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    permits: Arc<InFlight>,
}

impl<S, B> Service<http::Request<B>> for ConcurrencyLimit<S>
where
    S: Service<http::Request<B>, Response = HttpResponse>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Either<Ready<Result<HttpResponse, S::Error>>, HoldPermit<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.permits.try_acquire() {
            Some(permit) => Either::Right(HoldPermit {
                inner: self.inner.call(request),
                _permit: permit,
            }),
            None => Either::Left(ready(Ok(resource_exhausted(
                "OVERLOADED",
                "the server is at its concurrency limit; retry with backoff",
                Duration::from_millis(100),
            )
            .into_http()))),
        }
    }
}

pin_project_lite::pin_project! {
    /// A call's future holding its concurrency permit until the handler answers.
    pub struct HoldPermit<F> {
        #[pin]
        inner: F,
        _permit: Permit,
    }
}

impl<F: std::future::Future> std::future::Future for HoldPermit<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

// === rate limit ===

/// Limits each caller to a steady rate with a burst allowance. Callers are keyed
/// by principal subject when authenticated, by peer IP otherwise, so one noisy
/// client cannot starve the rest. Sits inside the auth layer, which supplies the
/// principal.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Option<Arc<KeyedLimiter>>,
    exempt: Arc<[&'static str]>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("enabled", &self.limiter.is_some())
            .finish()
    }
}

impl RateLimitLayer {
    /// `per_second` calls per caller with bursts of `burst`; 0 disables the limit.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            let limiter = Arc::new(RateLimiter::dashmap_with_clock_and_hasher(
                Quota::per_second(rate).allow_burst(burst),
                DefaultClock::default(),
                foldhash::fast::RandomState::default(),
            ));
            // Forget idle callers now and then so the key map stays small.
            let weak = Arc::downgrade(&limiter);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    let Some(limiter) = weak.upgrade() else {
                        return;
                    };
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            });
            limiter
        });
        Self {
            limiter,
            exempt: Arc::new([]),
        }
    }

    /// Calls to these services (fully-qualified names) spend no budget.
    pub fn exempt(mut self, services: &[&'static str]) -> Self {
        self.exempt = services.into();
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            exempt: self.exempt.clone(),
        }
    }
}

/// See [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Option<Arc<KeyedLimiter>>,
    exempt: Arc<[&'static str]>,
}

impl<S, B> Service<http::Request<B>> for RateLimit<S>
where
    S: Service<http::Request<B>, Response = HttpResponse>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Either<Ready<Result<HttpResponse, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(limiter) = &self.limiter
            && !is_exempt(&self.exempt, request.uri().path())
            && let Some(key) = caller_key(&request)
            && let Err(not_until) = limiter.check_key(&key)
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let status = resource_exhausted(
                "RATE_LIMITED",
                format!(
                    "rate limit exceeded; retry in {} ms",
                    wait.as_millis().max(1)
                ),
                wait,
            );
            return Either::Left(ready(Ok(status.into_http())));
        }
        Either::Right(self.inner.call(request))
    }
}

/// Whether `path` (`/package.Service/Method`) is a method of an exempt service.
fn is_exempt(exempt: &[&str], path: &str) -> bool {
    let service = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(service, _)| service);
    exempt.contains(&service)
}

/// The rate-limit key of a request: its principal, else its peer address; `None`
/// for service-role callers, which are Agora's own services and are bounded by
/// the concurrency limit instead (a saga must not be throttled as one user).
fn caller_key<B>(request: &http::Request<B>) -> Option<CallerKey> {
    if let Some(principal) = request.extensions().get::<Principal>() {
        if principal.role == crate::auth::Role::Service {
            return None;
        }
        return Some(CallerKey::Subject(principal.subject.clone()));
    }
    let ip: Option<IpAddr> = request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
        .map(|addr| addr.ip());
    Some(ip.map_or(CallerKey::Anonymous, CallerKey::Peer))
}

/// Whose budget a call spends.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CallerKey {
    /// A verified principal's subject.
    Subject(String),
    /// An unauthenticated caller's address.
    Peer(IpAddr),
    /// An unauthenticated caller whose address is unknown.
    Anonymous,
}

// === panic guard ===

/// Turns a panic inside a handler into INTERNAL for that call only.
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

/// See [`CatchPanicLayer`].
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for CatchPanic<S>
where
    S: Service<http::Request<B>, Response = HttpResponse>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = PanicToStatus<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        PanicToStatus {
            inner: AssertUnwindSafe(self.inner.call(request)).catch_unwind(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A call's future whose panic becomes an INTERNAL response.
    pub struct PanicToStatus<F> {
        #[pin]
        inner: futures::future::CatchUnwind<AssertUnwindSafe<F>>,
    }
}

impl<F, E> std::future::Future for PanicToStatus<F>
where
    F: std::future::Future<Output = Result<HttpResponse, E>>,
{
    type Output = Result<HttpResponse, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %message, "handler panicked; answering INTERNAL");
                Poll::Ready(Ok(
                    Status::internal("internal error; it has been logged").into_http()
                ))
            }
        }
    }
}
