//! One builder serves a service with the whole stack.
//!
//! ```text
//! ServiceHost::new(settings, verifier)
//!     .add_service(grpc_server!(UserServiceServer::new(api), &settings), &POLICY)
//!     .database(database)                      // readiness, pool metrics, closed last
//!     .background("sweeper", |stop| sweep(stop)) // optional, any number
//!     .follow_user_service(credentials, tls)?     // refuse revoked tokens
//!     .serve(listener, shutdown::signal())
//! ```
//!
//! Every call is traced ([`crate::trace`]). Every host also serves grpc.health.v1 (driven by the readiness probe) and
//! grpc.reflection v1 and v1alpha covering every service on the port
//! ([`crate::reflection`]); every service on it takes gzip and zstd
//! ([`grpc_server!`]). With a
//! metrics listener (`AGORA_METRICS_LISTEN`) it records every call and serves
//! `GET /metrics` there.
//!
//! **Shutdown contract.** When `shutdown` resolves: health goes NOT_SERVING,
//! background tasks are told (their token is cancelled) so they stop taking
//! new work, the listener closes and in-flight calls drain. Background tasks
//! are then awaited for what is left of the grace period; one still running
//! after it is dropped, exactly as a crash would stop it, so whatever it does
//! must be safe to stop at any `await`. Last, the database closes. Dropping
//! the `serve` future (a crash, in tests) drops the background tasks too.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tower::Service;

use crate::auth::policy::PolicyTable;
use crate::auth::user_feed::UserServiceFeed;
use crate::auth::{AuthLayer, RevocationFeed, ServicePolicy, TokenVerifier};
use crate::client::{BearerSource, DeadlineLayer};
use crate::config::ServeArgs;
use crate::connections::{self, ConnectionLayer, ConnectionRegistry};
use crate::db::Database;
use crate::health::HealthRegistry;
use crate::limits::{CatchPanicLayer, ConcurrencyLimitLayer, RateLimitLayer};
use crate::message_size::MessageSizeLayer;
use crate::metrics::{GrpcMetrics, MetricsLayer, serve_metrics};
use crate::reflection::{DescriptorIndex, Reflection};
use crate::trace::TraceLayer;
use crate::transport::{KillSwitch, ServerIo};

/// The fully-qualified names of the health and reflection services.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// How long the readiness probe waits for the database before calling it down.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// A task that runs beside the server; see [`ServiceHost::background`].
type BackgroundTask = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// Configures a generated tonic server the way every Agora service (health
/// and reflection included) is served:
/// - requests up to `settings.max_request_bytes` (the `MessageSizeLayer`
///   refuses larger ones first, with RESOURCE_EXHAUSTED; tonic's own 4 MiB
///   default would otherwise cap a larger setting; a compressed message is
///   held to it once decompressed, as RESOURCE_EXHAUSTED too);
/// - gzip- and zstd-compressed requests accepted, as grpc-go and grpc-java
///   clients configured for compression send them;
/// - replies compressed only when the caller lists gzip or zstd in
///   `grpc-accept-encoding` (the first it lists wins), plain otherwise.
///
/// A macro because tonic's generated servers share these methods by name,
/// not through a trait.
#[macro_export]
macro_rules! grpc_server {
    ($server:expr, $settings:expr) => {
        $server
            .max_decoding_message_size($settings.max_request_bytes)
            .accept_compressed($crate::serve::CompressionEncoding::Gzip)
            .accept_compressed($crate::serve::CompressionEncoding::Zstd)
            .send_compressed($crate::serve::CompressionEncoding::Gzip)
            .send_compressed($crate::serve::CompressionEncoding::Zstd)
    };
}

/// The encodings [`grpc_server!`] turns on, for its expansion in other crates.
pub use tonic::codec::CompressionEncoding;

/// Builds and runs one gRPC server with Agora's serving stack.
pub struct ServiceHost {
    settings: ServeArgs,
    verifier: TokenVerifier,
    routes: RoutesBuilder,
    policies: PolicyTable,
    names: Vec<&'static str>,
    database: Option<Database>,
    background: Vec<(&'static str, BackgroundTask)>,
    health: Option<HealthRegistry>,
    metrics: GrpcMetrics,
    metrics_listener: Option<TcpListener>,
}

impl std::fmt::Debug for ServiceHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHost")
            .field("services", &self.names)
            .finish_non_exhaustive()
    }
}

impl ServiceHost {
    /// A host with no services yet, verifying tokens with `verifier`.
    pub fn new(settings: ServeArgs, verifier: TokenVerifier) -> Self {
        if let Some(secret) = &settings.page_token_secret {
            crate::api::pagination::set_secret(secret.0.as_bytes());
        }
        let mut policies = PolicyTable::default();
        for public in [HEALTH_SERVICE, REFLECTION_V1, REFLECTION_V1ALPHA] {
            policies.add(&ServicePolicy::public(public));
        }
        Self {
            settings,
            verifier,
            routes: RoutesBuilder::default(),
            policies,
            names: Vec::new(),
            database: None,
            background: Vec::new(),
            health: None,
            metrics: GrpcMetrics::new(),
            metrics_listener: None,
        }
    }

    /// Serves `service` under the access rules in `policy`.
    pub fn add_service<S>(mut self, service: S, policy: &ServicePolicy) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        assert_eq!(
            S::NAME,
            policy.service,
            "the policy must describe the service it is added with"
        );
        self.routes.add_service(service);
        self.policies.add(policy);
        self.names.push(S::NAME);
        self
    }

    /// The service's database: the services are SERVING only while it
    /// answers, its pool is reported in the metrics, and it is closed once
    /// the server and its background tasks have stopped.
    pub fn database(mut self, database: Database) -> Self {
        self.database = Some(database);
        self
    }

    /// Runs `task` beside the server while it serves: a sweeper, a
    /// reconciler, a recovery loop. It gets a token that is cancelled when
    /// shutdown begins (see the module's shutdown contract).
    pub fn background<F, Fut>(mut self, name: &'static str, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background
            .push((name, Box::new(move |stop| Box::pin(task(stop)))));
        self
    }

    /// Serves `outbox`'s event feed (`agora.events.v1.EventFeedService`,
    /// [`crate::outbox::FEED_POLICY`]), reports its metrics, and prunes it
    /// to the retention setting (`AGORA_EVENT_RETENTION`) in the background.
    /// With `AGORA_NATS_URL`, a relay publishes its events to NATS JetStream
    /// ([`crate::outbox::relay`]). Feed streams end when shutdown begins.
    pub fn outbox(self, outbox: crate::outbox::Outbox) -> Self {
        outbox.register_metrics(&self.metrics);
        let closing = CancellationToken::new();
        let feed = crate::outbox::EventFeed::new(outbox.clone(), closing.clone());
        let retention = self.settings.event_retention;
        let server = grpc_server!(feed.server(), self.settings);
        let host = self.add_service(server, &crate::outbox::FEED_POLICY);
        let relay = host
            .settings
            .nats_url
            .clone()
            .map(|url| crate::outbox::RelaySettings {
                url,
                prefix: host.settings.nats_subject_prefix.clone(),
            });
        let keep_unpublished = relay.is_some();
        let host = host.background("event feed", move |stop| async move {
            stop.cancelled().await;
            closing.cancel();
        });
        let host = match relay {
            Some(settings) => {
                let metrics = crate::outbox::relay::RelayMetrics::register(&host.metrics);
                let outbox = outbox.clone();
                host.background("event relay", move |stop| {
                    crate::outbox::relay::run(outbox, settings, metrics, None, stop)
                })
            }
            None => host,
        };
        host.background("outbox retention", move |stop| {
            outbox.prune_every_minute(retention, keep_unpublished, stop)
        })
    }

    /// Refuses tokens revoked in `feed` (read every `AGORA_REVOCATION_POLL`
    /// into the verifier's [`Revocations`](crate::auth::Revocations), see
    /// [`crate::auth::revocations`]). A poll of 0 leaves revocations
    /// unfollowed, with a warning.
    pub fn revocations(self, feed: Arc<dyn RevocationFeed>) -> Self {
        let every = self.settings.revocation_poll;
        if every.is_zero() {
            tracing::warn!(
                "AGORA_REVOCATION_POLL is 0: tokens of deleted or disabled accounts work until they expire"
            );
            return self;
        }
        let set = self.verifier.revocations().clone();
        let metrics = self.metrics.clone();
        self.background("token revocations", move |stop| async move {
            crate::auth::revocations::follow(set, feed, every, &metrics, stop).await;
        })
    }

    /// [`Self::revocations`] read from the user service at
    /// `AGORA_REVOCATION_URL`, called with `credentials` (the service's own
    /// `service`-role tokens) over `tls` when given.
    pub fn follow_user_service(
        self,
        credentials: Arc<dyn BearerSource>,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> anyhow::Result<Self> {
        let feed = UserServiceFeed::connect(
            &self.settings.revocation_url,
            credentials,
            tls,
            &self.metrics,
        )?;
        Ok(self.revocations(Arc::new(feed)))
    }

    /// Serves `GET /metrics` on `listener` and records every call served,
    /// instead of the endpoint the settings name (`AGORA_METRICS_LISTEN`).
    /// Without either no call is measured (the layer is left out entirely).
    pub fn metrics(mut self, listener: TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// The metrics this host reports, so a service can record its calls to
    /// downstreams ([`GrpcMetrics::client_layer`]) on the same endpoint.
    pub fn grpc_metrics(&self) -> GrpcMetrics {
        self.metrics.clone()
    }

    /// The health registry of this host, created on first use, so a caller can
    /// watch or drive health itself (tests, the suite launcher).
    pub fn health(&mut self) -> HealthRegistry {
        let names = self.names.clone();
        self.health
            .get_or_insert_with(|| HealthRegistry::new(names))
            .clone()
    }

    /// Serves on `listener` until `shutdown` resolves, then: every service
    /// NOT_SERVING and health watchers released, no new connections, in-flight
    /// calls drained for up to the grace period, remaining connections closed.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let health = self.health();
        let reflection_names = self
            .names
            .iter()
            .copied()
            .chain([HEALTH_SERVICE, REFLECTION_V1, REFLECTION_V1ALPHA])
            .collect::<Vec<_>>();
        let mut routes = self.routes;
        routes.add_service(grpc_server!(health.service(), self.settings));
        let reflection = Reflection::new(DescriptorIndex::agora(), &reflection_names);
        routes.add_service(grpc_server!(reflection.v1(), self.settings));
        routes.add_service(grpc_server!(reflection.v1alpha(), self.settings));

        if self.metrics_listener.is_none() {
            self.metrics_listener = self.settings.bind_metrics().await?;
        }

        // Know the database's state before the first caller can ask.
        let stop_probe = CancellationToken::new();
        if let Some(database) = &self.database {
            self.metrics.observe_database(database.clone());
        }
        match self.database.clone() {
            Some(database) => {
                health.set_all_serving(database.is_reachable(READINESS_TIMEOUT).await);
                tokio::spawn(probe_readiness(
                    database,
                    health.clone(),
                    self.settings.readiness_interval,
                    stop_probe.clone(),
                ));
            }
            None => health.set_all_serving(true),
        }

        let stop_background = CancellationToken::new();
        let mut background = JoinSet::new();
        for (name, task) in self.background {
            let task = task(stop_background.clone());
            background.spawn(async move {
                task.await;
                tracing::debug!(task = name, "background task stopped");
            });
        }

        let kill_connections = KillSwitch::new();
        let draining = CancellationToken::new();
        let limits = self.settings.connection_limits();
        let connections = ConnectionRegistry::default();
        let incoming = {
            let kill = kill_connections.clone();
            let coalesce = self.settings.write_coalescing;
            connections::accept(listener, limits, connections.clone()).map(move |accepted| {
                accepted.map(|accepted| ServerIo::watched(accepted, kill.clone(), coalesce, limits))
            })
        };
        let shutdown_began = std::sync::Arc::new(std::sync::OnceLock::new());
        let signal = {
            let health = health.clone();
            let draining = draining.clone();
            let stop_probe = stop_probe.clone();
            let stop_background = stop_background.clone();
            let shutdown_began = shutdown_began.clone();
            async move {
                shutdown.await;
                let _ = shutdown_began.set(tokio::time::Instant::now());
                stop_probe.cancel();
                health.shut_down();
                stop_background.cancel();
                draining.cancel();
            }
        };

        // Outermost first; each layer sees what the ones above it let through.
        let metrics_layer = self
            .metrics_listener
            .is_some()
            .then(|| MetricsLayer::serving(&self.metrics, &reflection_names));
        let stop_metrics = CancellationToken::new();
        let metrics_endpoint = self.metrics_listener.map(|listener| {
            tokio::spawn(serve_metrics(
                listener,
                self.metrics.clone(),
                stop_metrics.clone().cancelled_owned(),
            ))
        });

        // Spans carry this service's own `service.name`, even when several
        // services share the process (the suite).
        let tracer = match self.names.first() {
            Some(first) => crate::telemetry::host_tracer(&crate::telemetry::service_name_of(first)),
            None => crate::trace::tracer(),
        };
        let mut builder = Server::builder();
        if let Some(tls) = self.settings.tls.load()? {
            builder = builder.tls_config(tls)?;
        }
        let server = builder
            .max_concurrent_streams(self.settings.max_concurrent_streams)
            .http2_keepalive_interval(Some(self.settings.keepalive_interval))
            .http2_keepalive_timeout(Some(self.settings.keepalive_timeout))
            // Outermost: the span covers everything the call costs, and every
            // log line below it carries the trace id.
            // It records the call's metrics too (one observation for both),
            // so calls refused below (shed, unauthenticated, rate limited)
            // are counted.
            .layer(TraceLayer::with_tracer(tracer).with_metrics(metrics_layer))
            // Every call, refused ones included, gets its deadline and request id
            // before anything else looks at it.
            .layer(DeadlineLayer::new(self.settings.default_deadline))
            // Every call counts on its connection (for the idle and send
            // timeouts), and a request body that stalls fails the call.
            .layer(ConnectionLayer::new(
                connections,
                self.settings.request_body_timeout,
            ))
            // Shed excess calls before spending anything on them.
            .layer(ConcurrencyLimitLayer::new(
                self.settings.max_concurrent_calls,
            ))
            // Who is calling, and may they call this method.
            .layer(AuthLayer::new(self.verifier, self.policies))
            // Per-caller budget, keyed by the principal the auth layer found.
            // Health and reflection are plumbing (probes, grpcurl's lookups
            // before every call) and spend none of it.
            .layer(
                RateLimitLayer::new(
                    self.settings.rate_limit_per_second,
                    self.settings.rate_limit_burst,
                )
                .exempt(&[HEALTH_SERVICE, REFLECTION_V1, REFLECTION_V1ALPHA]),
            )
            // Oversized messages: RESOURCE_EXHAUSTED as the body streams in.
            .layer(MessageSizeLayer::new(self.settings.max_request_bytes))
            // Innermost, so a panicking call is still seen (and counted) above.
            .layer(CatchPanicLayer)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(server);

        let grace = self.settings.shutdown_grace;
        tokio::select! {
            result = &mut server => result?,
            () = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "calls still open after the grace period; closing connections");
                kill_connections.pull();
                server.await?;
            }
        }
        stop_probe.cancel();
        stop_background.cancel();
        // Background tasks get what is left of the grace period, so the
        // whole shutdown stays within it; then they are dropped.
        let left = shutdown_began
            .get()
            .map_or(grace, |began| grace.saturating_sub(began.elapsed()));
        if tokio::time::timeout(left, async {
            while background.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                ?grace,
                "background tasks still busy after the grace period; stopping them"
            );
            background.shutdown().await;
        }
        if let Some(database) = &self.database {
            database.close().await;
        }
        // Spans of the last calls go out before the process may exit.
        crate::telemetry::flush_traces().await;
        // Scrapes keep working through the drain; stop them last.
        stop_metrics.cancel();
        if let Some(endpoint) = metrics_endpoint
            && let Err(error) = endpoint.await
        {
            tracing::warn!(%error, "metrics endpoint task failed");
        }
        Ok(())
    }
}

/// Polls the database and flips health on every change.
async fn probe_readiness(
    database: Database,
    health: HealthRegistry,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut was_ready = None;
    loop {
        let ready = database.is_reachable(READINESS_TIMEOUT).await;
        if was_ready != Some(ready) {
            if ready {
                tracing::info!("database reachable; serving");
            } else {
                tracing::warn!("database unreachable; health is NOT_SERVING");
            }
            was_ready = Some(ready);
        }
        health.set_all_serving(ready);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
