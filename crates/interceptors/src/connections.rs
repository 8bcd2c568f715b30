//! What a connection may cost the server, bounded: how many are open, how long
//! one may sit without sending its HTTP/2 preface, without a call, with a
//! reply it does not read, or with a request body it does not finish.
//!
//! - **Accepting.** [`accept`] takes a connection only while fewer than
//!   `max_connections` are open (the rest wait in the kernel's backlog), and
//!   when `accept(2)` fails for lack of descriptors or memory (EMFILE, ENFILE,
//!   ENOBUFS, ENOMEM) it backs off (5 ms doubling to 1 s, as Go's net/http
//!   does) instead of retrying at once: the failing accept leaves the pending
//!   connection in the backlog, so retrying at once only spins.
//! - **Watching.** Each accepted connection has an [`Activity`]: the calls
//!   open on it and whether a reply is waiting for the peer to read it. Its
//!   socket ([`crate::transport::ServerIo`]) checks it whenever it waits, and
//!   fails the connection (hyper then drops it and every stream on it) when
//!   the preface has not arrived within `handshake_timeout`, when no call has
//!   been open for `idle_timeout`, or when replies have waited
//!   `send_timeout` without the peer reading any (a zero flow-control
//!   window, or a full TCP window).
//! - **Calls.** [`ConnectionLayer`] counts each call on its connection's
//!   `Activity` from its start until its reply is gone, and fails a request
//!   body that makes no progress for `body_progress_timeout`
//!   (DEADLINE_EXCEEDED: the request did not arrive in time; not CANCELLED,
//!   which tonic reads as the caller hanging up), so a stalled upload frees
//!   its concurrency slot whatever deadline it announced.
//!
//! The per-connection stream limit (`SETTINGS_MAX_CONCURRENT_STREAMS`) and
//! HTTP/2 keep-alive pings are hyper's, set in [`crate::serve`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http_body::{Body, Frame, SizeHint};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bounds on one server's connections (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a new connection may take to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// How long a connection may stay open with no call on it.
    pub idle_timeout: Duration,
    /// How long replies may wait for the peer to read them.
    pub send_timeout: Duration,
    /// How long a request body may go without a frame.
    pub body_progress_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            send_timeout: Duration::from_secs(20),
            body_progress_timeout: Duration::from_secs(10),
        }
    }
}

// === activity ===

/// What one connection is doing, as its calls report it.
#[derive(Debug)]
pub struct Activity {
    /// When the connection was accepted; the times below count from it.
    epoch: Instant,
    /// Calls open on the connection (from request to reply gone).
    open_calls: AtomicUsize,
    /// Milliseconds after `epoch` at which the last call ended.
    idle_since: AtomicU64,
    /// Reply frames handed to hyper and not yet taken by the peer.
    unsent: AtomicUsize,
    /// Milliseconds after `epoch` at which a reply frame last left (or the
    /// first one began to wait).
    send_progress: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            open_calls: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            unsent: AtomicUsize::new(0),
            send_progress: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    fn call_started(&self) {
        self.open_calls.fetch_add(1, Ordering::AcqRel);
    }

    fn call_ended(&self) {
        if self.open_calls.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.now_ms(), Ordering::Release);
        }
    }

    fn reply_waiting(&self) {
        if self.unsent.fetch_add(1, Ordering::AcqRel) == 0 {
            self.send_progress.store(self.now_ms(), Ordering::Release);
        }
    }

    fn reply_sent(&self) {
        self.send_progress.store(self.now_ms(), Ordering::Release);
        self.unsent.fetch_sub(1, Ordering::AcqRel);
    }

    /// Why the connection must close now, or when to look again.
    pub(crate) fn check(
        &self,
        limits: &ConnectionLimits,
        now: Instant,
    ) -> Result<Instant, &'static str> {
        let tick = limits.idle_timeout.min(limits.send_timeout) / 4;
        let mut next = now + tick.max(Duration::from_millis(50));
        if self.open_calls.load(Ordering::Acquire) == 0 {
            let deadline = self.at(self.idle_since.load(Ordering::Acquire)) + limits.idle_timeout;
            if now >= deadline {
                return Err("idle: no call for the idle timeout");
            }
            next = next.min(deadline);
        }
        if self.unsent.load(Ordering::Acquire) > 0 {
            let deadline =
                self.at(self.send_progress.load(Ordering::Acquire)) + limits.send_timeout;
            if now >= deadline {
                return Err("replies unread for the send timeout");
            }
            next = next.min(deadline);
        }
        Ok(next)
    }
}

/// The [`Activity`] of every open connection, by peer address, so a call can
/// find its connection's.
#[derive(Clone, Debug, Default)]
pub struct ConnectionRegistry {
    open: Arc<Mutex<HashMap<SocketAddr, Arc<Activity>, foldhash::fast::RandomState>>>,
}

impl ConnectionRegistry {
    fn register(&self, peer: SocketAddr) -> Registration {
        let activity = Arc::new(Activity::new());
        self.lock().insert(peer, activity.clone());
        Registration {
            registry: self.clone(),
            peer,
            activity,
        }
    }

    fn find(&self, peer: SocketAddr) -> Option<Arc<Activity>> {
        self.lock().get(&peer).cloned()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Activity>, foldhash::fast::RandomState>>
    {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One accepted connection's place among the open ones: its activity, and
/// its share of `max_connections`, both given back when the socket closes.
#[derive(Debug)]
pub struct Registration {
    registry: ConnectionRegistry,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl Registration {
    pub(crate) fn activity(&self) -> &Activity {
        &self.activity
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        if open
            .get(&self.peer)
            .is_some_and(|a| Arc::ptr_eq(a, &self.activity))
        {
            open.remove(&self.peer);
        }
    }
}

// === accepting ===

/// An accepted socket with its registration and connection permit.
#[derive(Debug)]
pub struct Accepted {
    /// The socket (TCP_NODELAY set).
    pub stream: TcpStream,
    /// Its activity record.
    pub registration: Registration,
    /// Its place among `max_connections`.
    pub permit: OwnedSemaphorePermit,
}

/// Whether `error` from `accept(2)` means the process (or system) is out of
/// descriptors or memory: retrying at once would fail again.
pub fn is_resource_exhaustion(error: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(
        error.raw_os_error(),
        Some(EMFILE | ENFILE | ENOBUFS | ENOMEM)
    )
}

/// Accept back-offs taken in this process (for tests and diagnosis).
static BACKOFFS: AtomicUsize = AtomicUsize::new(0);

/// How many times an accept loop of this process backed off because
/// descriptors or memory ran out.
pub fn accept_backoffs() -> usize {
    BACKOFFS.load(Ordering::Relaxed)
}

/// How long to wait before the next `accept(2)` after a failure: 5 ms,
/// doubling up to 1 s, reset by a success. Failures that concern only the
/// one connection (it was reset before it was accepted) wait nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptBackoff {
    current: Option<Duration>,
}

impl AcceptBackoff {
    /// The first wait after a resource failure.
    pub const FIRST: Duration = Duration::from_millis(5);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(1);

    /// The wait after `error`.
    pub fn failed(&mut self, error: &io::Error) -> Duration {
        if !is_resource_exhaustion(error) {
            return Duration::ZERO;
        }
        let next = self
            .current
            .map_or(Self::FIRST, |current| (current * 2).min(Self::MAX));
        self.current = Some(next);
        next
    }

    /// An accept succeeded.
    pub fn succeeded(&mut self) {
        self.current = None;
    }
}

/// The connections `listener` accepts, at most `max_connections` open at
/// once, backing off when descriptors run out. Never yields an error (tonic
/// would retry at once); ends only when dropped.
pub fn accept(
    listener: TcpListener,
    limits: ConnectionLimits,
    registry: ConnectionRegistry,
) -> impl Stream<Item = Result<Accepted, io::Error>> + Send {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    futures::stream::unfold(
        (listener, slots, registry, AcceptBackoff::default()),
        |(listener, slots, registry, mut backoff)| async move {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return None;
            };
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        backoff.succeeded();
                        let _ = stream.set_nodelay(true);
                        let registration = registry.register(peer);
                        let accepted = Accepted {
                            stream,
                            registration,
                            permit,
                        };
                        return Some((Ok(accepted), (listener, slots, registry, backoff)));
                    }
                    Err(error) => {
                        let wait = backoff.failed(&error);
                        if wait.is_zero() {
                            tracing::debug!(%error, "accept failed");
                            continue;
                        }
                        tracing::warn!(%error, ?wait, "accept failed for lack of resources; backing off");
                        BACKOFFS.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        },
    )
}

// === calls ===

/// Counts each call on its connection's [`Activity`] and fails request
/// bodies that stall (see the module documentation).
#[derive(Clone, Debug)]
pub struct ConnectionLayer {
    registry: ConnectionRegistry,
    body_progress_timeout: Duration,
}

impl ConnectionLayer {
    /// Calls on the connections in `registry`; bodies stalled for
    /// `body_progress_timeout` fail.
    pub fn new(registry: ConnectionRegistry, body_progress_timeout: Duration) -> Self {
        Self {
            registry,
            body_progress_timeout,
        }
    }
}

impl<S> Layer<S> for ConnectionLayer {
    type Service = ConnectionCalls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectionCalls {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`ConnectionLayer`].
#[derive(Clone, Debug)]
pub struct ConnectionCalls<S> {
    inner: S,
    layer: ConnectionLayer,
}

fn peer_of<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}

impl<S, B> Service<http::Request<B>> for ConnectionCalls<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = CallFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = peer_of(&request)
            .and_then(|peer| self.layer.registry.find(peer))
            .map(|activity| {
                activity.call_started();
                CallGuard { activity }
            });
        let timeout = self.layer.body_progress_timeout;
        let request = request.map(|body| {
            tonic::body::Body::new(ProgressBody {
                inner: body,
                timeout,
                stall: None,
                failed: false,
            })
        });
        CallFuture {
            inner: self.inner.call(request),
            guard,
        }
    }
}

/// A call open on its connection until dropped.
#[derive(Debug)]
struct CallGuard {
    activity: Arc<Activity>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.activity.call_ended();
    }
}

pin_project_lite::pin_project! {
    /// A call's future: its reply body carries the call's guard.
    pub struct CallFuture<F> {
        #[pin]
        inner: F,
        guard: Option<CallGuard>,
    }
}

impl<F, E> std::future::Future for CallFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let Some(guard) = this.guard.take() else {
            return Poll::Ready(Ok(response));
        };
        Poll::Ready(Ok(response.map(|body| {
            tonic::body::Body::new(TrackedReply {
                inner: body,
                guard,
                waiting: false,
            })
        })))
    }
}

pin_project_lite::pin_project! {
    /// A reply body that reports frames waiting for the peer to read them:
    /// hyper polls a body again only once its last frame has been sent.
    struct TrackedReply {
        #[pin]
        inner: tonic::body::Body,
        guard: CallGuard,
        waiting: bool,
    }

    impl PinnedDrop for TrackedReply {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.waiting {
                this.guard.activity.reply_sent();
            }
        }
    }
}

impl Body for TrackedReply {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        if *this.waiting {
            *this.waiting = false;
            this.guard.activity.reply_sent();
        }
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && frame.is_data()
        {
            *this.waiting = true;
            this.guard.activity.reply_waiting();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails once it goes `timeout` without a frame.
    struct ProgressBody<B> {
        #[pin]
        inner: B,
        timeout: Duration,
        stall: Option<Pin<Box<Sleep>>>,
        failed: bool,
    }
}

impl<B> Body for ProgressBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(stall) = this.stall.as_mut() {
                    stall.as_mut().reset(Instant::now() + *this.timeout);
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = *this.timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(stall.as_mut().poll(cx));
                *this.failed = true;
                Poll::Ready(Some(Err(Box::new(Status::deadline_exceeded(format!(
                    "the request body made no progress for {}",
                    humantime::format_duration(timeout)
                ))))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_failures_back_off_doubling_up_to_a_second() {
        let mut backoff = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(24);
        let waits: Vec<_> = (0..10).map(|_| backoff.failed(&emfile)).collect();
        assert_eq!(waits[0], AcceptBackoff::FIRST);
        assert_eq!(waits[1], AcceptBackoff::FIRST * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), AcceptBackoff::MAX);
        // ENFILE too; a connection reset before accept waits nothing.
        assert!(backoff.failed(&io::Error::from_raw_os_error(23)) > Duration::ZERO);
        assert_eq!(
            backoff.failed(&io::Error::from(io::ErrorKind::ConnectionAborted)),
            Duration::ZERO
        );
        backoff.succeeded();
        assert_eq!(backoff.failed(&emfile), AcceptBackoff::FIRST);
    }

    #[test]
    fn idle_and_unread_connections_are_due_for_closing() {
        let limits = ConnectionLimits {
            idle_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(4),
            ..ConnectionLimits::default()
        };
        let at = |secs| Instant::now() + Duration::from_secs(secs);
        // No call since it was accepted: idle after the idle timeout.
        let activity = Activity::new();
        assert!(activity.check(&limits, at(1)).is_ok());
        assert!(activity.check(&limits, at(11)).is_err(), "idle");

        // A reply waiting for the peer: closed after the send timeout.
        let activity = Activity::new();
        activity.call_started();
        activity.reply_waiting();
        assert!(activity.check(&limits, at(3)).is_ok());
        assert!(activity.check(&limits, at(5)).is_err(), "unread");
        activity.reply_sent();
        assert!(activity.check(&limits, at(5)).is_ok(), "read at last");

        // A call open for long, its replies read: neither idle nor stalled.
        let activity = Activity::new();
        activity.call_started();
        assert!(activity.check(&limits, at(60)).is_ok());
        activity.call_ended();
        assert!(
            activity.check(&limits, at(11)).is_err(),
            "idle once it ends"
        );
    }
}
