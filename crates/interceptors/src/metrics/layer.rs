//! Tower layers that count and time every call: [`MetricsLayer`] around a
//! server's routes, [`ClientMetricsLayer`] around a channel to a downstream.
//! How a call ended is seen by [`crate::observe`]; a call dropped before its
//! end is recorded as `Canceled` by [`Call`]'s drop.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};

use super::GrpcMetrics;
use super::messages::count_request_messages;
use super::recorder::{Call, MethodTable};
use crate::observe::{ObservedFuture, Outcome};

/// Records `grpc_server_*` for every call reaching the wrapped routes. Put it
/// outermost so calls refused by later layers (auth) are counted too.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    table: Arc<MethodTable>,
}

impl MetricsLayer {
    /// A layer recording into `metrics` that names only the methods of
    /// `services` (the ones actually served); any other path is `unknown`.
    /// Built once at start-up.
    pub fn serving(metrics: &GrpcMetrics, services: &[&str]) -> Self {
        Self {
            table: Arc::new(metrics.server_table().only_services(services)),
        }
    }
}

impl MetricsLayer {
    /// Starts recording one call of `path`, for a layer that observes its
    /// calls itself ([`crate::trace::TraceLayer::with_metrics`]).
    pub fn start_call(&self, path: &str) -> Call {
        self.table.start(path)
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            table: self.table.clone(),
            // A server's own stack failing is none of the caller's doing.
            error_code: Code::Unknown,
        }
    }
}

/// Records `grpc_client_*` for every call made through the wrapped channel; a
/// transport error (the channel returning `Err`) counts as `Unavailable`.
#[derive(Clone, Debug)]
pub struct ClientMetricsLayer {
    table: Arc<MethodTable>,
}

impl ClientMetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: &GrpcMetrics) -> Self {
        Self {
            table: metrics.client_table(),
        }
    }
}

impl<S> Layer<S> for ClientMetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            table: self.table.clone(),
            error_code: Code::Unavailable,
        }
    }
}

/// The service either layer wraps around its inner service.
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    table: Arc<MethodTable>,
    /// What an `Err` from `inner` is recorded as.
    error_code: Code,
}

impl<S, B> Service<http::Request<B>> for MetricsService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future, Call>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.table.start(request.uri().path());
        let request = count_request_messages(request, call.request_messages());
        ObservedFuture::new(self.inner.call(request), call, self.error_code)
    }
}

impl Outcome for Call {
    fn finish(&mut self, code: Code) {
        Call::finish(self, code);
    }

    fn counts_messages(&self) -> bool {
        true
    }

    fn response_messages(&mut self, count: u64) {
        Call::response_messages(self, count);
    }
}
