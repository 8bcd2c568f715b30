//! Tower layers that count and time every call: [`MetricsLayer`] around a
//! server's routes, [`ClientMetricsLayer`] around a channel to a downstream.
//!
//! A call's gRPC status is in the response headers when the response is
//! trailers-only (most errors), otherwise in the trailers after the body; so
//! the body is wrapped and the call recorded when the trailers go by, when the
//! body ends without them, or as `Canceled` when it is dropped before the end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http_body::{Frame, SizeHint};
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};

use super::GrpcMetrics;
use super::codes;
use super::recorder::{Call, MethodTable};

/// Records `grpc_server_*` for every call reaching the wrapped routes. Put it
/// outermost so calls refused by later layers (auth) are counted too.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    table: Arc<MethodTable>,
}

impl MetricsLayer {
    /// A layer recording into `metrics`, naming every method `metrics` knows.
    pub fn new(metrics: &GrpcMetrics) -> Self {
        Self {
            table: metrics.server_table(),
        }
    }

    /// A layer recording into `metrics` that names only the methods of
    /// `services` (the ones actually served); any other path is `unknown`.
    /// Built once at start-up.
    pub fn serving(metrics: &GrpcMetrics, services: &[&str]) -> Self {
        Self {
            table: Arc::new(metrics.server_table().only_services(services)),
        }
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
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.table.start(request.uri().path());
        MetricsFuture {
            inner: self.inner.call(request),
            call: Some(call),
            error_code: self.error_code,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`MetricsService`]. Dropping it before the
    /// response arrives records the call as `Canceled`.
    #[derive(Debug)]
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
        error_code: Code,
    }
}

impl<F, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this
            .call
            .take()
            .expect("MetricsFuture polled after completion");
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                call.finish(*this.error_code);
                return Poll::Ready(Err(error));
            }
        };
        // Trailers-only: the status is already here and the body is empty.
        if let Some(code) = codes::from_headers(response.headers()) {
            call.finish(code);
            return Poll::Ready(Ok(response));
        }
        if response.status() != http::StatusCode::OK {
            call.finish(codes::from_http_status(response.status()));
            return Poll::Ready(Ok(response));
        }
        // `Body::new` drops a body that is already over, so never wrap one.
        if http_body::Body::is_end_stream(response.body()) {
            call.finish(Code::Unknown);
            return Poll::Ready(Ok(response));
        }
        Poll::Ready(Ok(
            response.map(|inner| Body::new(MetricsBody { inner, call }))
        ))
    }
}

/// A response body that records its call when the trailers pass, when it ends
/// without them (`Unknown`: a gRPC response always ends with a status), or when
/// dropped before either (`Canceled`, by [`Call`]'s drop).
#[derive(Debug)]
struct MetricsBody {
    inner: Body,
    call: Call,
}

impl http_body::Body for MetricsBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call
                        .finish(codes::from_headers(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(status))) => this.call.finish(status.code()),
            Poll::Ready(None) => this.call.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
