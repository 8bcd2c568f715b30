//! The client side of deadline propagation: the outermost client layer.
//!
//! Each outgoing call gets the deadline of the call being served on this task
//! ([`current_deadline`]) or, outside any served call, the downstream's default;
//! a `grpc-timeout` the caller set itself is honoured when it is sooner. The
//! remaining time goes out as `grpc-timeout`, the request id as `x-request-id`,
//! and the deadline rides in the request's extensions ([`CallDeadline`]) for
//! the inner layers. A call whose deadline has already passed fails at once
//! with DEADLINE_EXCEEDED without touching the network, and a call still
//! running at its deadline is dropped and answered DEADLINE_EXCEEDED, so a call
//! waiting for a connection or a retry never outlives its caller.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;
use tonic::Status;
use tower::{Layer, Service};

use super::BoxError;
use super::context::{
    CallDeadline, REQUEST_ID, current_deadline, current_request_id, new_request_id,
};
use super::grpc_timeout::{self, GRPC_TIMEOUT};

/// Stamps deadline and request id on outgoing calls.
#[derive(Clone, Copy, Debug)]
pub struct OutgoingLayer {
    default: Duration,
}

impl OutgoingLayer {
    /// A layer giving calls made outside any served call the deadline `default`.
    pub fn new(default: Duration) -> Self {
        Self { default }
    }
}

impl<S> Layer<S> for OutgoingLayer {
    type Service = OutgoingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OutgoingService {
            inner,
            default: self.default,
        }
    }
}

/// The service [`OutgoingLayer`] wraps.
#[derive(Clone, Debug)]
pub struct OutgoingService<S> {
    inner: S,
    default: Duration,
}

type Response = http::Response<tonic::body::Body>;

impl<S> Service<http::Request<tonic::body::Body>> for OutgoingService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = Response, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let now = Instant::now();
        let mut deadline = current_deadline().unwrap_or(now + self.default);
        let explicit = request
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(|value| value.to_str().ok())
            .and_then(grpc_timeout::parse);
        if let Some(explicit) = explicit {
            deadline = deadline.min(now + explicit);
        }
        if deadline <= now {
            return Box::pin(async { Ok(deadline_exceeded("deadline passed before the call")) });
        }
        stamp_timeout(&mut request, deadline - now);
        if !request.headers().contains_key(REQUEST_ID) {
            let id = current_request_id().unwrap_or_else(new_request_id);
            if let Ok(value) = HeaderValue::from_str(&id) {
                request.headers_mut().insert(REQUEST_ID, value);
            }
        }
        request.extensions_mut().insert(CallDeadline(deadline));

        let call = self.inner.call(request);
        Box::pin(async move {
            // Deadline first: tonic's own timeout (it reads the grpc-timeout
            // stamped above) may fire in the same timer tick and would answer
            // CANCELLED; the deadline is ours to report.
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => {
                    Ok(deadline_exceeded("deadline exceeded waiting for the downstream"))
                }
                response = call => response,
            }
        })
    }
}

/// Writes `remaining` as the request's `grpc-timeout`.
pub(crate) fn stamp_timeout<B>(request: &mut http::Request<B>, remaining: Duration) {
    if let Ok(value) = HeaderValue::from_str(&grpc_timeout::encode(remaining)) {
        request.headers_mut().insert(GRPC_TIMEOUT, value);
    }
}

fn deadline_exceeded(message: &str) -> Response {
    Status::deadline_exceeded(message.to_owned()).into_http()
}
