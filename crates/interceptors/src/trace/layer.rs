//! The tower layers that open a span per call: [`TraceLayer`] around a
//! server's routes, [`ClientTraceLayer`] around a channel to a downstream.

use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::global::BoxedTracer;
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};

use super::propagation;
use super::span::RpcSpan;
use crate::metrics::{Call, MetricsLayer, count_request_messages};
use crate::observe::{ObservedFuture, Outcome};

/// Opens a SERVER span for every call, continuing the caller's trace; with
/// [`TraceLayer::with_metrics`], records the call's metrics too.
#[derive(Clone)]
pub struct TraceLayer {
    tracer: Arc<BoxedTracer>,
    metrics: Option<MetricsLayer>,
}

impl std::fmt::Debug for TraceLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceLayer").finish_non_exhaustive()
    }
}

impl TraceLayer {
    /// A layer using the global tracer provider as it is now: install the
    /// provider ([`crate::telemetry::init`]) before building servers.
    pub fn new() -> Self {
        Self {
            tracer: Arc::new(super::tracer()),
            metrics: None,
        }
    }

    /// A layer whose spans (and the downstream calls made while serving)
    /// go through `tracer`, one service's ([`crate::telemetry::host_tracer`]).
    pub fn with_tracer(tracer: BoxedTracer) -> Self {
        Self {
            tracer: Arc::new(tracer),
            metrics: None,
        }
    }

    /// Also records each call's metrics, from the same observation of how it
    /// ended: the metrics layer on its own would wrap every call's future and
    /// body a second time and read its status twice (measured: a few percent
    /// of a bare call; BENCHMARKS.md).
    pub fn with_metrics(mut self, metrics: Option<MetricsLayer>) -> Self {
        self.metrics = metrics;
        self
    }
}

impl Default for TraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            tracer: self.tracer.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`TraceLayer`] wraps.
#[derive(Clone)]
pub struct TraceService<S> {
    inner: S,
    tracer: Arc<BoxedTracer>,
    metrics: Option<MetricsLayer>,
}

impl<S> std::fmt::Debug for TraceService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceService").finish_non_exhaustive()
    }
}

impl<S, B> Service<http::Request<B>> for TraceService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ObservedFuture<WithContext<S::Future>, ServedCall>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let parent = propagation::extract(request.headers());
        let path = request.uri().path();
        let span = RpcSpan::server(&*self.tracer, path, &parent);
        let metrics = self
            .metrics
            .as_ref()
            .map(|metrics| metrics.start_call(path));
        let request = match &metrics {
            Some(call) => count_request_messages(request, call.request_messages()),
            None => request.map(Body::new),
        };
        let mut context = span.context().clone();
        if crate::telemetry::is_exporting() {
            // Downstream calls made while serving are this service's spans too.
            context = context.with_value(ServingTracer(self.tracer.clone()));
        }
        // Current while the handler runs, so downstream calls continue the
        // trace and log lines name it (`crate::log_ids`).
        let future = {
            let _current = context.clone().attach();
            self.inner.call(request)
        };
        ObservedFuture::new(
            future.with_context(context),
            ServedCall { span, metrics },
            // A server's own stack failing is none of the caller's doing.
            Code::Unknown,
        )
    }
}

/// The tracer of the service serving the current call, in its context, so
/// [`ClientTraceLayer`] records downstream calls under that service's name.
#[derive(Clone)]
struct ServingTracer(Arc<BoxedTracer>);

/// What a served call reports when it ends: its span, and its metrics when
/// they are on.
#[derive(Debug)]
pub struct ServedCall {
    span: RpcSpan,
    metrics: Option<Call>,
}

impl Outcome for ServedCall {
    fn finish(&mut self, code: Code) {
        if let Some(metrics) = &mut self.metrics {
            metrics.finish(code);
        }
        self.span.finish(code);
    }

    fn counts_messages(&self) -> bool {
        self.metrics.is_some()
    }

    fn response_messages(&mut self, count: u64) {
        if let Some(metrics) = &self.metrics {
            metrics.response_messages(count);
        }
    }
}

/// Opens a CLIENT span for every call made, child of the current context, and
/// sends it downstream as `traceparent`.
#[derive(Clone)]
pub struct ClientTraceLayer {
    tracer: Arc<BoxedTracer>,
}

impl std::fmt::Debug for ClientTraceLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTraceLayer").finish_non_exhaustive()
    }
}

impl ClientTraceLayer {
    /// A layer using the global tracer provider as it is now.
    pub fn new() -> Self {
        Self {
            tracer: Arc::new(super::tracer()),
        }
    }
}

impl Default for ClientTraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ClientTraceLayer {
    type Service = ClientTraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientTraceService {
            inner,
            tracer: self.tracer.clone(),
        }
    }
}

/// The service [`ClientTraceLayer`] wraps.
#[derive(Clone)]
pub struct ClientTraceService<S> {
    inner: S,
    tracer: Arc<BoxedTracer>,
}

impl<S> std::fmt::Debug for ClientTraceService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTraceService").finish_non_exhaustive()
    }
}

impl<S, B> Service<http::Request<B>> for ClientTraceService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future, RpcSpan>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let current = opentelemetry::Context::current();
        let tracer = current
            .get::<ServingTracer>()
            .map_or(&*self.tracer, |serving| &*serving.0);
        let span = RpcSpan::client(tracer, request.uri().path(), &current);
        propagation::inject(span.context(), request.headers_mut());
        ObservedFuture::new(
            self.inner.call(request),
            span,
            // The channel failing means the downstream could not be reached.
            Code::Unavailable,
        )
    }
}
