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
//! system call. A lone call pays one extra trip through the scheduler (no
//! timer, no Nagle-style delay), and a large buffer is written through at once.
//! BENCHMARKS.md has the measurements behind this.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bytes buffered before a write goes out without waiting for the flush.
const WRITE_THROUGH: usize = 64 * 1024;

/// A server-side connection that coalesces writes and stops working when its
/// token is cancelled.
pub struct ServerIo {
    inner: TcpStream,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    pending: BytesMut,
    /// Whether this burst has already yielded once before writing.
    yielded: bool,
    coalesce: bool,
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
    /// Wraps an accepted socket; cancelling `kill` aborts it. Writes are
    /// coalesced when `coalesce` is true, passed straight through otherwise.
    pub fn new(inner: TcpStream, kill: CancellationToken, coalesce: bool) -> Self {
        Self {
            inner,
            killed: Box::pin(kill.cancelled_owned()),
            pending: BytesMut::new(),
            yielded: false,
            coalesce,
        }
    }

    /// `Some(error)` once the kill switch is pulled; registers the waker otherwise.
    fn check_killed(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.killed.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed: shutdown grace period over",
            )
        })
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
                Poll::Ready(Ok(written)) => self.pending.advance(written),
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(error) = self.check_killed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.check_killed(cx) {
            return Poll::Ready(Err(error));
        }
        if !self.coalesce {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        if self.pending.len() >= WRITE_THROUGH {
            // Too much waiting already: write it now; take more only once
            // some of it has gone.
            if self.poll_drain(cx)?.is_pending() && self.pending.len() >= WRITE_THROUGH {
                return Poll::Pending;
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
            if let Some(error) = self.check_killed(cx) {
                return Poll::Ready(Err(error));
            }
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
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
        if let Some(error) = self.check_killed(cx) {
            return Poll::Ready(Err(error));
        }
        if !self.pending.is_empty() && !self.yielded {
            // Let every task that is ready add its frames first; the wake
            // puts this connection's task at the back of the run queue.
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        std::task::ready!(self.poll_drain(cx))?;
        self.yielded = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for ServerIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
