//! Accepted connections, wrapped so the server can close them itself and so
//! replies leave in as few writes as possible.
//!
//! **Bounded drain.** tonic's graceful shutdown waits for every connection to
//! finish on its own, and an open stream (a health Watch, an order Watch) never
//! does. Each accepted socket is therefore wrapped in a [`ServerIo`] that fails
//! its reads and writes once the host's kill switch is pulled, which ends
//! hyper's connection task promptly.
//!
//! **Write coalescing.** h2 writes a connection's pending frames and flushes
//! each time its connection task runs, and Tokio runs that task right after
//! every handler that answers (the woken task takes the worker's LIFO slot), so
//! under load each reply leaves in its own `write(2)`. [`ServerIo`] instead
//! buffers what h2 writes and, on the first flush of a burst, yields once:
//! the connection task goes to the back of the run queue, every handler that is
//! ready runs and hands h2 its reply, and the next flush writes them all in one
//! system call. There is no timer and no Nagle-style delay, and a large buffer
//! is written through at once.
//!
//! The yield only pays when other streams of the same connection are about to
//! answer; otherwise it only makes this reply wait for other connections'
//! handlers (measured: +50 µs at the median with four one-stream connections
//! at 2 000 calls/s). So each connection watches whether its yields gain
//! anything: after [`FRUITLESS_LIMIT`] yields in a row during which no other
//! frame joined the buffer, it writes its next bursts at once, for a pause
//! that starts at [`FIRST_PAUSE`] bursts and doubles while yielding keeps
//! gaining nothing (up to [`MAX_PAUSE`]); one yield that gains a frame ends
//! the backing off. BENCHMARKS.md has the measurements behind this.
//!
//! **Watchdog.** A socket accepted through [`crate::connections::accept`]
//! also enforces that module's bounds: whenever it is about to wait, it
//! checks its connection's activity and fails (ending the connection and
//! every stream on it) when the HTTP/2 preface is late, the connection has
//! been idle too long, or replies have gone unread for the send timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::connections::{Accepted, ConnectionLimits, Registration};

/// The client connection preface every HTTP/2 connection starts with.
const PREFACE_LEN: usize = 24;

/// Bytes buffered before a write goes out without waiting for the flush.
const WRITE_THROUGH: usize = 64 * 1024;

/// Yields in a row that gained no frame before a connection stops yielding.
const FRUITLESS_LIMIT: u8 = 2;

/// Bursts written at once, without a yield, after the first fruitless run of
/// yields; each further fruitless run doubles it, up to [`MAX_PAUSE`], and a
/// yield that gains a frame resets it.
const FIRST_PAUSE: u8 = 4;

/// The longest pause, in bursts: how often a connection that never gains
/// from yielding still tries (a lone call's reply waits ~1 time in 64).
const MAX_PAUSE: u8 = 64;

/// Where a connection is in writing one burst of frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Burst {
    /// Nothing flushed yet.
    Idle,
    /// Yielded once at the first flush, with this many bytes buffered.
    Yielded { buffered: usize },
    /// Writing the buffer out.
    Writing,
}

/// Ends every connection it was given to at once: pulled when a drain's grace
/// period is over.
#[derive(Clone, Debug, Default)]
pub struct KillSwitch {
    /// Read on every read, write and flush: an atomic load, where
    /// `CancellationToken::is_cancelled` takes a mutex that every connection
    /// of the server shares.
    pulled: Arc<AtomicBool>,
    /// Wakes connections that are waiting on their socket.
    token: CancellationToken,
}

impl KillSwitch {
    /// A switch not pulled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails every connection's pending and future reads and writes.
    pub fn pull(&self) {
        self.pulled.store(true, Ordering::Release);
        self.token.cancel();
    }

    fn is_pulled(&self) -> bool {
        self.pulled.load(Ordering::Acquire)
    }
}

/// A server-side connection that coalesces writes and stops working when its
/// kill switch is pulled.
pub struct ServerIo {
    inner: TcpStream,
    kill: KillSwitch,
    /// Wakes this connection's task when `kill` is pulled; polled only
    /// when an operation is about to return `Pending` (see [`Self::park`]).
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The waker `killed` last registered: re-registering the same one on
    /// every `Pending` would take the kill switch's lock each time.
    kill_waker: Option<Waker>,
    pending: BytesMut,
    burst: Burst,
    yields: YieldPolicy,
    coalesce: bool,
    /// The connection bounds, for a socket accepted with them.
    watch: Option<Box<Watchdog>>,
}

/// A watched connection's bounds and state (see the module documentation).
struct Watchdog {
    limits: ConnectionLimits,
    registration: Registration,
    _permit: OwnedSemaphorePermit,
    /// Preface bytes not yet read.
    preface_left: usize,
    handshake_deadline: Instant,
    /// Since when a write has been waiting for the peer's TCP window.
    write_blocked_since: Option<Instant>,
    /// Wakes the connection for the next check.
    timer: Pin<Box<Sleep>>,
}

impl Watchdog {
    /// Why the connection must close now, or when to look again.
    fn check(&self, now: Instant) -> Result<Instant, &'static str> {
        let mut next = self.registration.activity().check(&self.limits, now)?;
        if self.preface_left > 0 {
            if now >= self.handshake_deadline {
                return Err("no HTTP/2 preface within the handshake timeout");
            }
            next = next.min(self.handshake_deadline);
        }
        if let Some(since) = self.write_blocked_since {
            let deadline = since + self.limits.send_timeout;
            if now >= deadline {
                return Err("the peer read nothing for the send timeout");
            }
            next = next.min(deadline);
        }
        Ok(next)
    }

    /// Fails the connection if a bound is passed; otherwise arms the timer
    /// so the connection's task wakes for the next check.
    fn poll(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            let now = Instant::now();
            let next = self
                .check(now)
                .map_err(|reason| io::Error::new(io::ErrorKind::TimedOut, reason))?;
            // Resetting costs the timer wheel's lock: only when the timer
            // would fire too late, or has fired.
            let deadline = self.timer.deadline();
            if deadline > next || deadline <= now {
                self.timer.as_mut().reset(next);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
        }
    }
}

/// Whether a burst should yield before it is written: yes, unless recent
/// yields gained nothing (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct YieldPolicy {
    /// Yields in a row that gained nothing.
    fruitless: u8,
    /// Bursts still to write without yielding.
    paused_for: u8,
    /// How long the next pause will be.
    next_pause: u8,
}

impl Default for YieldPolicy {
    fn default() -> Self {
        Self {
            fruitless: 0,
            paused_for: 0,
            next_pause: FIRST_PAUSE,
        }
    }
}

impl YieldPolicy {
    /// Whether the burst about to be written should yield first.
    fn should_yield(&mut self) -> bool {
        if self.paused_for > 0 {
            self.paused_for -= 1;
            return false;
        }
        true
    }

    /// Notes whether a yield gained frames; pauses yielding after
    /// [`FRUITLESS_LIMIT`] fruitless ones in a row.
    fn record(&mut self, gained: bool) {
        if gained {
            self.fruitless = 0;
            self.next_pause = FIRST_PAUSE;
            return;
        }
        self.fruitless += 1;
        if self.fruitless >= FRUITLESS_LIMIT {
            self.fruitless = 0;
            self.paused_for = self.next_pause;
            self.next_pause = self.next_pause.saturating_mul(2).min(MAX_PAUSE);
        }
    }
}

impl std::fmt::Debug for ServerIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIo")
            .field("inner", &self.inner)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl ServerIo {
    /// Wraps an accepted socket; pulling `kill` aborts it. Writes are
    /// coalesced when `coalesce` is true, passed straight through otherwise.
    pub fn new(inner: TcpStream, kill: KillSwitch, coalesce: bool) -> Self {
        Self {
            inner,
            killed: Box::pin(kill.token.clone().cancelled_owned()),
            kill,
            kill_waker: None,
            pending: BytesMut::new(),
            burst: Burst::Idle,
            yields: YieldPolicy::default(),
            coalesce,
            watch: None,
        }
    }

    /// Wraps a socket [`crate::connections::accept`] accepted, enforcing
    /// `limits` on it.
    pub fn watched(
        accepted: Accepted,
        kill: KillSwitch,
        coalesce: bool,
        limits: ConnectionLimits,
    ) -> Self {
        let handshake_deadline = Instant::now() + limits.handshake_timeout;
        let mut io = Self::new(accepted.stream, kill, coalesce);
        io.watch = Some(Box::new(Watchdog {
            limits,
            registration: accepted.registration,
            _permit: accepted.permit,
            preface_left: PREFACE_LEN,
            handshake_deadline,
            write_blocked_since: None,
            timer: Box::pin(tokio::time::sleep_until(handshake_deadline)),
        }));
        io
    }

    /// Notes whether a write made progress (for the send timeout).
    fn wrote(&mut self, progressed: bool) {
        if let Some(watch) = self.watch.as_mut() {
            if progressed {
                watch.write_blocked_since = None;
            } else if watch.write_blocked_since.is_none() {
                watch.write_blocked_since = Some(Instant::now());
            }
        }
    }

    /// Whether the kill switch is pulled: an atomic load, cheap enough for
    /// every read, write and flush.
    fn is_killed(&self) -> bool {
        self.kill.is_pulled()
    }

    /// `Pending` for an operation that must wait, making sure the wait also
    /// ends when the kill switch is pulled. (Registering that wake-up costs a
    /// lock, so it is done only here, not on every call.)
    fn park<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if self.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        if let Some(watch) = self.watch.as_mut()
            && let Err(error) = watch.poll(cx)
        {
            tracing::debug!(%error, "closing connection");
            return Poll::Ready(Err(error));
        }
        let registered = self
            .kill_waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if !registered {
            if self.killed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(killed_error()));
            }
            self.kill_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Writes the buffer out; `Ready(Ok)` once it is empty. Through
    /// `writev(2)`, as h2 writes on tonic's own path: `send(2)`, which a plain
    /// write uses, costs the same but is not counted in /proc/PID/io, and the
    /// benchmark compares write counts from there.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let slice = [io::IoSlice::new(&self.pending)];
            match Pin::new(&mut self.inner).poll_write_vectored(cx, &slice) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => {
                    self.pending.advance(written);
                    self.wrote(true);
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    self.wrote(false);
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

fn killed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed: shutdown grace period over",
    )
}

impl AsyncRead for ServerIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => self.park(cx),
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if let Some(watch) = self.watch.as_mut() {
                    watch.preface_left = watch.preface_left.saturating_sub(read);
                }
                Poll::Ready(Ok(()))
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        if !self.coalesce {
            return match Pin::new(&mut self.inner).poll_write(cx, buf) {
                Poll::Pending => {
                    self.wrote(false);
                    self.park(cx)
                }
                ready => {
                    self.wrote(true);
                    ready
                }
            };
        }
        if self.pending.len() >= WRITE_THROUGH {
            // Too much waiting already: write it now; take more only once
            // some of it has gone.
            if self.poll_drain(cx)?.is_pending() && self.pending.len() >= WRITE_THROUGH {
                return self.park(cx);
            }
        }
        self.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.coalesce {
            if self.is_killed() {
                return Poll::Ready(Err(killed_error()));
            }
            return match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
                Poll::Pending => {
                    self.wrote(false);
                    self.park(cx)
                }
                ready => {
                    self.wrote(true);
                    ready
                }
            };
        }
        let mut total = 0;
        for buf in bufs {
            match self.as_mut().poll_write(cx, buf) {
                Poll::Ready(Ok(written)) => total += written,
                Poll::Ready(Err(error)) if total == 0 => return Poll::Ready(Err(error)),
                Poll::Pending if total == 0 => return Poll::Pending,
                _ => break,
            }
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        // Coalescing copies slices into one buffer either way.
        self.coalesce || self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        if self.pending.is_empty() {
            self.burst = Burst::Idle;
        } else {
            let burst = self.burst;
            match burst {
                Burst::Idle if !self.yields.should_yield() => {
                    self.burst = Burst::Writing;
                }
                Burst::Idle => {
                    // Let every task that is ready add its frames first; the
                    // wake puts this connection's task at the back of the run
                    // queue.
                    self.burst = Burst::Yielded {
                        buffered: self.pending.len(),
                    };
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Burst::Yielded { buffered } => {
                    let gained = self.pending.len() > buffered;
                    self.yields.record(gained);
                    self.burst = Burst::Writing;
                }
                Burst::Writing => {}
            }
        }
        if self.poll_drain(cx)?.is_pending() {
            return self.park(cx);
        }
        self.burst = Burst::Idle;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.poll_drain(cx)?.is_pending() {
            return self.park(cx);
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for ServerIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The yields `policy` makes over `bursts` bursts when no yield gains.
    fn yields_while_fruitless(policy: &mut YieldPolicy, bursts: usize) -> usize {
        (0..bursts)
            .filter(|_| {
                let yielded = policy.should_yield();
                if yielded {
                    policy.record(false);
                }
                yielded
            })
            .count()
    }

    #[test]
    fn fruitless_yields_back_off_doubling_up_to_the_cap() {
        let mut policy = YieldPolicy::default();
        // Two fruitless yields, then a pause of 4 bursts.
        assert!(policy.should_yield());
        policy.record(false);
        assert!(policy.should_yield());
        policy.record(false);
        assert_eq!((0..4).filter(|_| policy.should_yield()).count(), 0);
        assert!(policy.should_yield());
        // Pauses double (8, 16, 32, 64, 64, …): over 1 000 bursts of a lone
        // caller only a few dozen yield.
        let yields = yields_while_fruitless(&mut YieldPolicy::default(), 1000);
        assert!((20..=40).contains(&yields), "{yields} yields");
        assert_eq!(policy.next_pause, 8);
    }

    #[test]
    fn one_fruitful_yield_ends_the_backing_off() {
        let mut policy = YieldPolicy::default();
        yields_while_fruitless(&mut policy, 200);
        assert_eq!(policy.next_pause, MAX_PAUSE);
        while !policy.should_yield() {}
        policy.record(true);
        assert_eq!(policy, YieldPolicy::default());
        // Under load every yield gains: every burst yields.
        for _ in 0..100 {
            assert!(policy.should_yield());
            policy.record(true);
        }
    }
}
