//! The gateway's one HTTP service: health, readiness, metrics and the
//! OpenAPI document at fixed paths; gRPC and gRPC-Web passed through to the
//! service that owns the method; everything else transcoded from HTTP/JSON by
//! the route table.
//!
//! Every call, whatever its protocol, first passes the protections the
//! services apply to their own callers: a concurrency limit that sheds load
//! and a per-caller rate limit (both RESOURCE_EXHAUSTED, HTTP 429, with a
//! RetryInfo), and a request size limit (HTTP 413). Calls to the services go
//! through the shared client stack ([`agora_interceptors::client`]): the
//! deadline (`grpc-timeout` header, else the default), the request id and the
//! W3C trace context go along, `Authorization` is passed through as it came,
//! and only safe (GET) methods are retried.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use agora_interceptors::client::grpc_timeout::{self, GRPC_TIMEOUT};
use agora_interceptors::client::{CallContext, DownstreamChannel, REQUEST_ID, new_request_id};
use agora_interceptors::metrics::{GrpcMetrics, MetricsLayer};
use agora_interceptors::observe::Outcome as _;
use agora_interceptors::trace::{RpcSpan, extract, tracer};
use bytes::Bytes;
use futures::StreamExt as _;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use opentelemetry::context::FutureExt as _;
use prost_reflect::DescriptorPool;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Service, ServiceExt as _};

use crate::codec::DynamicCodec;
use crate::errors::{bad_request, http_status, retry_later, status_json};
use crate::routes::{Matched, Miss, RouteTable};
use crate::transcode::{request_message, to_json};

const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";

/// Who a rate limit counts: the bearer token's holder, else the peer address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Caller {
    Token(u64),
    Peer(IpAddr),
}

/// What the gateway shares across connections.
pub(crate) struct Shared {
    pub(crate) pool: DescriptorPool,
    pub(crate) routes: RouteTable,
    /// Channels by fully qualified service name.
    pub(crate) upstreams: HashMap<String, DownstreamChannel>,
    pub(crate) openapi: Bytes,
    pub(crate) metrics: GrpcMetrics,
    pub(crate) served: MetricsLayer,
    pub(crate) limiter: Option<DefaultKeyedRateLimiter<Caller>>,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) max_in_flight: usize,
    pub(crate) max_request_bytes: usize,
    pub(crate) default_deadline: Duration,
    pub(crate) stream_deadline: Duration,
    pub(crate) ready: AtomicBool,
    pub(crate) upstream_health: std::sync::Mutex<Vec<(String, String)>>,
    /// grpc.reflection v1 and v1alpha over the four services, served here
    /// (grpcurl and buf curl describe the API through the gateway).
    pub(crate) reflection: HashMap<&'static str, LocalGrpc>,
}

/// A gRPC service the gateway answers itself.
pub(crate) type LocalGrpc =
    tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// The per-caller token buckets, or none when the limit is off.
pub(crate) fn rate_limiter(per_second: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<Caller>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// The gateway as a service over HTTP requests from one peer.
#[derive(Clone)]
pub struct GatewayService {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: IpAddr,
}

impl std::fmt::Debug for GatewayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayService")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for GatewayService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request).await) })
    }
}

/// Gives back one in-flight slot when the call ends.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl GatewayService {
    async fn handle<B>(self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
    {
        let shared = &self.shared;
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => return plain(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => return self.readiness(),
            (&Method::GET, "/metrics") => {
                return match shared.metrics.encode() {
                    Ok(text) => Response::builder()
                        .header(CONTENT_TYPE, agora_interceptors::metrics::CONTENT_TYPE)
                        .body(Body::new(Full::new(Bytes::from(text))))
                        .unwrap_or_default(),
                    Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
                };
            }
            (&Method::GET, "/openapi.json") => {
                return Response::builder()
                    .header(CONTENT_TYPE, JSON)
                    .body(Body::new(Full::new(shared.openapi.clone())))
                    .unwrap_or_default();
            }
            _ => {}
        }

        // Load shedding, then the caller's rate.
        let in_flight = shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let _slot = Slot(shared.clone());
        if in_flight >= shared.max_in_flight {
            let status = retry_later(
                Code::ResourceExhausted,
                "the gateway is at its concurrency limit; retry later",
                Duration::from_millis(100),
            );
            return self.status_response(&request, &status, None);
        }
        if let Some(limiter) = &shared.limiter {
            let caller = caller_of(request.headers(), self.peer);
            if let Err(not_until) = limiter.check_key(&caller) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let status = retry_later(
                    Code::ResourceExhausted,
                    "rate limit exceeded for this caller; retry later",
                    wait,
                );
                return self.status_response(&request, &status, None);
            }
        }

        let is_grpc = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/grpc"));
        if is_grpc {
            return self.grpc(request).await;
        }
        self.transcode(request).await
    }

    /// gRPC and gRPC-Web: translated by tonic-web, passed to the owner of the
    /// method untouched (no decoding), answered as the caller spoke.
    async fn grpc<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
    {
        let proxy = GrpcProxy {
            shared: self.shared.clone(),
        };
        let web = tower::Layer::layer(&tonic_web::GrpcWebLayer::new(), proxy);
        match web.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    async fn transcode<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
    {
        let shared = self.shared.clone();
        let (parts, body) = request.into_parts();
        let request_id = parts
            .headers
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(new_request_id);
        let path = parts.uri.path().to_owned();
        let Matched { route, bindings } = match shared.routes.find(&parts.method, &path) {
            Ok(matched) => matched,
            Err(Miss::NotFound) => {
                let status = Status::not_found(format!("no route for {} {path}", parts.method));
                return self.error(&status, &request_id, None);
            }
            Err(Miss::MethodNotAllowed) => {
                let status =
                    Status::unimplemented(format!("{path} does not accept {}", parts.method));
                return self.error(&status, &request_id, Some(StatusCode::METHOD_NOT_ALLOWED));
            }
        };

        let too_large = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|length| length > shared.max_request_bytes);
        let bytes = if too_large {
            None
        } else {
            Limited::new(body, shared.max_request_bytes)
                .collect()
                .await
                .ok()
                .map(|collected| collected.to_bytes())
        };
        let Some(bytes) = bytes else {
            let status = Status::out_of_range(format!(
                "the request body is larger than {} bytes",
                shared.max_request_bytes
            ));
            return self.error(&status, &request_id, Some(StatusCode::PAYLOAD_TOO_LARGE));
        };

        let mut served = shared.served.start_call(&route.grpc_path);
        let parent = extract(&parts.headers);
        let span = RpcSpan::server(&tracer(), &route.grpc_path, &parent);
        let message = match request_message(route, &bindings, parts.uri.query(), &bytes) {
            Ok(message) => message,
            Err(violations) => {
                let status = bad_request(&violations);
                served.finish(status.code());
                return self.error(&status, &request_id, None);
            }
        };

        let streaming = route.is_streaming();
        let timeout = parts
            .headers
            .get(GRPC_TIMEOUT)
            .and_then(|value| value.to_str().ok())
            .and_then(grpc_timeout::parse)
            .unwrap_or(if streaming {
                shared.stream_deadline
            } else {
                shared.default_deadline
            });
        let deadline = tokio::time::Instant::now() + timeout;
        let Some(channel) = shared.upstreams.get(route.service()).cloned() else {
            let status = Status::unimplemented(format!("no upstream for {}", route.service()));
            return self.error(&status, &request_id, None);
        };
        let mut metadata = HeaderMap::new();
        for name in [
            AUTHORIZATION,
            http::header::HeaderName::from_static("tracestate"),
        ] {
            if let Some(value) = parts.headers.get(&name) {
                metadata.insert(name, value.clone());
            }
        }
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            metadata.insert(REQUEST_ID, value);
        }
        let call = tonic::Request::from_parts(
            tonic::metadata::MetadataMap::from_headers(metadata),
            tonic::Extensions::default(),
            message,
        );
        let codec = DynamicCodec::new(route.grpc.output());
        let Ok(grpc_path) = http::uri::PathAndQuery::from_str(&route.grpc_path) else {
            let status = Status::internal("bad method path");
            return self.error(&status, &request_id, None);
        };
        let context = span.context().clone();
        let mut client = tonic::client::Grpc::new(channel);
        let ids = CallContext::new(deadline, Some(request_id.clone()));

        if !streaming {
            let outcome = ids
                .scope(
                    async move {
                        client.ready().await.map_err(|error| {
                            Status::unavailable(format!("upstream not ready: {error}"))
                        })?;
                        client.unary(call, grpc_path, codec).await
                    }
                    .with_context(context),
                )
                .await;
            let mut span = span;
            return match outcome {
                Ok(response) => {
                    served.finish(Code::Ok);
                    span.finish(Code::Ok);
                    json_response(StatusCode::OK, to_json(response.get_ref()), &request_id)
                }
                Err(status) => {
                    served.finish(status.code());
                    span.finish(status.code());
                    self.error(&status, &request_id, None)
                }
            };
        }

        let outcome = ids
            .scope(
                async move {
                    client.ready().await.map_err(|error| {
                        Status::unavailable(format!("upstream not ready: {error}"))
                    })?;
                    client.server_streaming(call, grpc_path, codec).await
                }
                .with_context(context),
            )
            .await;
        let stream = match outcome {
            Ok(response) => response.into_inner(),
            Err(status) => {
                served.finish(status.code());
                let mut span = span;
                span.finish(status.code());
                return self.error(&status, &request_id, None);
            }
        };
        let pool = shared.pool.clone();
        // One event per message; a failure mid-stream is an `error` event
        // with the google.rpc.Status, then the stream ends.
        let events = futures::stream::unfold(Some((stream, served, span)), move |state| {
            let pool = pool.clone();
            async move {
                let (mut stream, mut served, mut span) = state?;
                match stream.next().await {
                    Some(Ok(message)) => {
                        let event = sse_event(None, &to_json(&message));
                        Some((event, Some((stream, served, span))))
                    }
                    Some(Err(status)) => {
                        served.finish(status.code());
                        span.finish(status.code());
                        let event = sse_event(Some("error"), &status_json(&pool, &status));
                        Some((event, None))
                    }
                    None => {
                        served.finish(Code::Ok);
                        span.finish(Code::Ok);
                        None
                    }
                }
            }
        })
        .map(|event| Ok::<_, Infallible>(Frame::data(event)));
        Response::builder()
            .header(CONTENT_TYPE, EVENT_STREAM)
            .header(http::header::CACHE_CONTROL, "no-cache")
            .header(
                REQUEST_ID,
                HeaderValue::from_str(&request_id).unwrap_or(HeaderValue::from_static("")),
            )
            .body(Body::new(StreamBody::new(events)))
            .unwrap_or_default()
    }

    fn readiness(&self) -> Response<Body> {
        let ready = self.shared.ready.load(Ordering::Relaxed);
        let upstreams: serde_json::Map<String, serde_json::Value> = self
            .shared
            .upstream_health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, state)| (name.clone(), serde_json::Value::String(state.clone())))
            .collect();
        let body = serde_json::json!({
            "status": if ready { "SERVING" } else { "NOT_SERVING" },
            "upstreams": upstreams,
        });
        let code = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(code, body.to_string().into_bytes(), "")
    }

    fn error(&self, status: &Status, request_id: &str, http: Option<StatusCode>) -> Response<Body> {
        let code = http.unwrap_or_else(|| http_status(status.code()));
        let mut response = json_response(code, status_json(&self.shared.pool, status), request_id);
        if let Some(retry) = retry_after(status) {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, retry);
        }
        response
    }

    /// A refusal before routing, in the protocol the caller speaks.
    fn status_response<B>(
        &self,
        request: &Request<B>,
        status: &Status,
        http: Option<StatusCode>,
    ) -> Response<Body> {
        let grpc = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/grpc"));
        if grpc {
            let mut response = status.clone().into_http::<Body>();
            if let Some(content_type) = request.headers().get(CONTENT_TYPE) {
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, content_type.clone());
            }
            return response;
        }
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.error(status, &request_id, http)
    }
}

/// `Retry-After` in whole seconds (at least 1) from a RetryInfo detail.
fn retry_after(status: &Status) -> Option<HeaderValue> {
    use tonic_types::StatusExt as _;
    let delay = status.get_details_retry_info()?.retry_delay?;
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    HeaderValue::from_str(&seconds.max(1).to_string()).ok()
}

fn caller_of(headers: &HeaderMap, peer: IpAddr) -> Caller {
    use std::hash::BuildHasher as _;
    match headers.get(AUTHORIZATION) {
        Some(value) => {
            Caller::Token(foldhash::quality::FixedState::default().hash_one(value.as_bytes()))
        }
        None => Caller::Peer(peer),
    }
}

fn sse_event(event: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 32);
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    // Compact JSON has no newlines, so one data line carries it.
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn json_response(code: StatusCode, body: Vec<u8>, request_id: &str) -> Response<Body> {
    let mut builder = Response::builder().status(code).header(CONTENT_TYPE, JSON);
    if !request_id.is_empty()
        && let Ok(value) = HeaderValue::from_str(request_id)
    {
        builder = builder.header(REQUEST_ID, value);
    }
    builder
        .body(Body::new(Full::new(Bytes::from(body))))
        .unwrap_or_default()
}

fn plain(code: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::new(Full::new(Bytes::from_static(text.as_bytes()))))
        .unwrap_or_default()
}

/// Forwards gRPC calls to the service that owns the method.
#[derive(Clone)]
struct GrpcProxy {
    shared: Arc<Shared>,
}

/// Headers that belong to one connection and must not be forwarded.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

impl Service<Request<Body>> for GrpcProxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let service = path
                .strip_prefix('/')
                .and_then(|rest| rest.split_once('/'))
                .map(|(service, _)| service.to_owned())
                .unwrap_or_default();
            if let Some(local) = shared.reflection.get(service.as_str()).cloned() {
                return local.oneshot(request).await;
            }
            let Some(channel) = shared.upstreams.get(&service).cloned() else {
                return Ok(Status::unimplemented(format!(
                    "no service {service} behind this gateway"
                ))
                .into_http());
            };
            for name in HOP_BY_HOP {
                request.headers_mut().remove(name);
            }
            if let Some(path_and_query) = request.uri().path_and_query().cloned() {
                *request.uri_mut() = http::Uri::from(path_and_query);
            }
            let parent = extract(request.headers());
            // The caller's own deadline if it sent one, else the default of
            // the method's kind (a followed stream lives longer).
            let streaming = path
                .rsplit_once('/')
                .and_then(|(_, method)| {
                    shared
                        .pool
                        .get_service_by_name(&service)?
                        .methods()
                        .find(|m| m.name() == method)
                })
                .is_some_and(|method| method.is_server_streaming());
            let timeout = request
                .headers()
                .get(GRPC_TIMEOUT)
                .and_then(|value| value.to_str().ok())
                .and_then(grpc_timeout::parse)
                .unwrap_or(if streaming {
                    shared.stream_deadline
                } else {
                    shared.default_deadline
                });
            let deadline = tokio::time::Instant::now() + timeout;
            let request_id = request
                .headers()
                .get(REQUEST_ID)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let call = async move {
                match channel.oneshot(request).await {
                    Ok(response) => response,
                    Err(error) => Status::unavailable(format!("upstream: {error}")).into_http(),
                }
            };
            Ok(CallContext::new(deadline, request_id)
                .scope(call.with_context(parent))
                .await)
        })
    }
}
