//! Agora's API gateway: the services' contracts over HTTP/JSON, gRPC-Web and
//! gRPC on one port, from the contracts alone.
//!
//! Routes come from the `google.api.http` rules in the protos, read at start
//! from the descriptor set compiled into `agora-proto` ([`routes`]); requests
//! and responses are transcoded at run time with prost-reflect's dynamic
//! messages and its proto3 JSON mapping ([`transcode`], [`codec`]); errors
//! become HTTP statuses with the `google.rpc.Status` as the body
//! ([`errors`]); the OpenAPI document is generated from the same descriptors
//! ([`openapi`]). Adding an HTTP rule to a method is all it takes to serve it.
#![forbid(unsafe_code)]

pub mod codec;
pub mod config;
pub mod errors;
pub mod openapi;
pub mod routes;
mod server;
pub mod transcode;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use agora_interceptors::client::{Downstream, DownstreamChannel};
use agora_interceptors::metrics::{GrpcMetrics, MetricsLayer};
use anyhow::Context as _;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prost_reflect::DescriptorPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use config::GatewayConfig;
pub use server::GatewayService;

/// The services behind the gateway, by full name, with the config field
/// holding each one's address.
pub const SERVICES: [&str; 4] = [
    "agora.user.v1.UserService",
    "agora.order.v1.OrderService",
    "agora.payment.v1.PaymentService",
    "agora.inventory.v1.InventoryService",
];

/// Agora's descriptor pool (every contract, with its HTTP rules and comments).
pub fn descriptor_pool() -> anyhow::Result<DescriptorPool> {
    DescriptorPool::decode(agora_proto::FILE_DESCRIPTOR_SET)
        .context("decoding the compiled-in descriptor set")
}

/// A gateway ready to serve: routes read, channels made (lazily connected).
pub struct Gateway {
    shared: Arc<server::Shared>,
    cors: Option<CorsLayer>,
    readiness_interval: Duration,
    shutdown_grace: Duration,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the gateway; must run inside a Tokio runtime.
    pub fn new(config: &GatewayConfig) -> anyhow::Result<Self> {
        let pool = descriptor_pool()?;
        let routes = routes::RouteTable::from_pool(&pool, &SERVICES)?;
        let openapi = Bytes::from(serde_json::to_vec_pretty(&openapi::document(
            &pool, &routes,
        ))?);
        let metrics = GrpcMetrics::new();
        let served = MetricsLayer::serving(&metrics, &SERVICES);
        let tls = config.tls.load()?;
        // Only safe methods are retried: a GET never changes anything.
        let retryable: Vec<&str> = routes
            .routes()
            .iter()
            .filter(|route| route.method == http::Method::GET)
            .map(|route| route.grpc_path.as_str())
            .collect();
        let mut upstreams = HashMap::new();
        for (service, url) in SERVICES.iter().zip([
            &config.user_url,
            &config.order_url,
            &config.payment_url,
            &config.inventory_url,
        ]) {
            let name = service.rsplit('.').next().unwrap_or(service);
            let channel: DownstreamChannel = Downstream::builder(name, url)
                .retryable(&retryable)
                .default_deadline(config.default_deadline)
                .tls(tls.clone())
                .metrics(&metrics)
                .build()?;
            upstreams.insert((*service).to_owned(), channel);
        }
        let cors = cors_layer(&config.allowed_origins)?;
        Ok(Self {
            shared: Arc::new(server::Shared {
                pool,
                routes,
                upstreams,
                openapi,
                metrics,
                served,
                limiter: server::rate_limiter(
                    config.rate_limit_per_second,
                    config.rate_limit_burst,
                ),
                in_flight: AtomicUsize::new(0),
                max_in_flight: config.max_concurrent_calls,
                max_request_bytes: config.max_request_bytes,
                default_deadline: config.default_deadline,
                stream_deadline: config.stream_deadline,
                ready: AtomicBool::new(false),
                upstream_health: std::sync::Mutex::new(Vec::new()),
                reflection: reflection_services(),
            }),
            cors,
            readiness_interval: config.readiness_interval,
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// The OpenAPI document this gateway serves.
    pub fn openapi(&self) -> Bytes {
        self.shared.openapi.clone()
    }

    /// Serves on `listener` until `shutdown` resolves, then lets open
    /// requests finish for the grace period.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let readiness = tokio::spawn(watch_upstreams(
            self.shared.clone(),
            self.readiness_interval,
            stop.clone(),
        ));
        let connections = tokio::task::JoinSet::new();
        let mut connections = connections;
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "gateway: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let service = self.service(peer);
            let stop = stop.clone();
            connections.spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%error, "gateway connection ended");
                        }
                    }
                    () = stop.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            });
            while connections.try_join_next().is_some() {}
        }
        stop.cancel();
        self.shared.ready.store(false, Ordering::Relaxed);
        let drained = tokio::time::timeout(self.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            connections.abort_all();
        }
        readiness.abort();
        Ok(())
    }

    /// The HTTP service for connections from `peer`, CORS included.
    pub fn service(
        &self,
        peer: SocketAddr,
    ) -> TowerToHyperService<
        tower::util::Either<tower_http::cors::Cors<GatewayService>, GatewayService>,
    > {
        let inner = GatewayService {
            shared: self.shared.clone(),
            peer: peer.ip(),
        };
        let service = match &self.cors {
            Some(cors) => tower::util::Either::Left(tower::Layer::layer(cors, inner)),
            None => tower::util::Either::Right(inner),
        };
        TowerToHyperService::new(service)
    }
}

/// grpc.reflection v1 and v1alpha describing the four services.
fn reflection_services() -> HashMap<&'static str, server::LocalGrpc> {
    use agora_interceptors::reflection::{DescriptorIndex, Reflection};
    const V1: &str = "grpc.reflection.v1.ServerReflection";
    const V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
    let mut names = SERVICES.to_vec();
    names.extend([V1, V1ALPHA]);
    let reflection = Reflection::new(DescriptorIndex::agora(), &names);
    HashMap::from([
        (V1, tower::util::BoxCloneSyncService::new(reflection.v1())),
        (
            V1ALPHA,
            tower::util::BoxCloneSyncService::new(reflection.v1alpha()),
        ),
    ])
}

/// CORS for browsers on the allowed origins: simple and preflight requests
/// for the JSON routes and gRPC-Web, with the gRPC headers exposed.
fn cors_layer(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    let origins: Vec<&String> = origins.iter().filter(|origin| !origin.is_empty()).collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|origin| origin.as_str() == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|origin| http::HeaderValue::from_str(origin))
            .collect::<Result<Vec<_>, _>>()
            .context("an allowed origin is not a valid header value")?;
        AllowOrigin::list(values)
    };
    let header = http::HeaderName::from_static;
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                http::Method::GET,
                http::Method::POST,
                http::Method::PUT,
                http::Method::PATCH,
                http::Method::DELETE,
            ])
            .allow_headers([
                http::header::AUTHORIZATION,
                http::header::CONTENT_TYPE,
                header("x-request-id"),
                header("grpc-timeout"),
                header("x-grpc-web"),
                header("x-user-agent"),
                header("traceparent"),
                header("tracestate"),
            ])
            .expose_headers([
                header("grpc-status"),
                header("grpc-message"),
                header("grpc-status-details-bin"),
                header("x-request-id"),
                http::header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600)),
    ))
}

/// Asks every upstream's health service, each interval, until stopped; the
/// gateway is ready while all four answer SERVING.
async fn watch_upstreams(shared: Arc<server::Shared>, every: Duration, stop: CancellationToken) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    loop {
        let mut states = Vec::new();
        let mut all = true;
        for service in SERVICES {
            let Some(channel) = shared.upstreams.get(service).cloned() else {
                continue;
            };
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: service.to_owned(),
            });
            request.set_timeout(every.max(Duration::from_secs(1)));
            let state = match HealthClient::new(channel).check(request).await {
                Ok(response) => match response.into_inner().status() {
                    ServingStatus::Serving => "SERVING".to_owned(),
                    other => other.as_str_name().to_owned(),
                },
                Err(status) => format!("UNREACHABLE: {}", status.message()),
            };
            all &= state == "SERVING";
            states.push((service.to_owned(), state));
        }
        *shared
            .upstream_health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = states;
        if !stop.is_cancelled() {
            shared.ready.store(all, Ordering::Relaxed);
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}
