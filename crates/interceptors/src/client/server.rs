//! [`DeadlineLayer`]: the server side of deadline propagation.
//!
//! Every served call gets an absolute deadline (the caller's `grpc-timeout`, or
//! the host's default when the caller sent none) and a request id, and its
//! future runs inside a [`CallContext`] scope so the handler's downstream calls
//! inherit both. The layer also enforces the deadline: a call still running
//! when it passes is dropped and answered DEADLINE_EXCEEDED, so a slow handler
//! never holds resources for a caller that has given up.
//!
//! tonic's own server timeout also reads `grpc-timeout` and, being outside every
//! user layer, may fire a moment earlier with CANCELLED "Timeout expired"; this
//! layer is what enforces the default deadline and what hands the deadline on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;
use tower::{Layer, Service};

use super::context::{CallContext, REQUEST_ID};
use super::grpc_timeout::{self, GRPC_TIMEOUT};

/// Sets, propagates and enforces each served call's deadline and request id.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    default: Duration,
}

impl DeadlineLayer {
    /// A layer giving calls without `grpc-timeout` the deadline `default`.
    pub fn new(default: Duration) -> Self {
        Self { default }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            default: self.default,
        }
    }
}

/// The service [`DeadlineLayer`] wraps around the routes.
#[derive(Clone, Debug)]
pub struct DeadlineService<S> {
    inner: S,
    default: Duration,
}

impl<S, B> Service<http::Request<B>> for DeadlineService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let timeout = request
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(|value| value.to_str().ok())
            .and_then(grpc_timeout::parse)
            .unwrap_or(self.default);
        let deadline = Instant::now() + timeout;
        let context = CallContext::new(deadline, incoming_request_id(&request));
        let call = self.inner.call(request);
        Box::pin(context.scope(within_deadline(call, deadline)))
    }
}

/// Runs `call` until `deadline`, answering DEADLINE_EXCEEDED if it passes
/// first. The timer is armed only when the call does not finish on its first
/// poll: arming one costs a wake-up of the runtime's driver (an `eventfd`
/// write), which a call answered at once need not pay.
async fn within_deadline<F, E>(
    call: F,
    deadline: Instant,
) -> Result<http::Response<tonic::body::Body>, E>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>>,
{
    let mut call = std::pin::pin!(call);
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        // Deadline first, so a call that ends in the deadline's own timer
        // tick is reported as what it is.
        if Instant::now() >= deadline {
            return Poll::Ready(Ok(expired()));
        }
        if let Poll::Ready(response) = call.as_mut().poll(cx) {
            return Poll::Ready(response);
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Ok(expired())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

fn expired() -> http::Response<tonic::body::Body> {
    Status::deadline_exceeded("deadline exceeded while serving the call").into_http()
}

/// The caller's request id, if it sent one (else the call's context makes
/// one when first asked).
fn incoming_request_id<B>(request: &http::Request<B>) -> Option<String> {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}
