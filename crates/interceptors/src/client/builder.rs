//! [`Downstream::builder`]: the whole client stack in one call.
//!
//! Layers, outermost first, and why each sits where it does:
//! 0. **metrics, then tracing** ([`crate::trace::ClientTraceLayer`]): one
//!    observation and one CLIENT span per logical call, so all attempts of a
//!    retried call share one span, and its `traceparent` goes downstream.
//! 1. **deadline + request id** ([`OutgoingLayer`]): the deadline is fixed once
//!    per logical call and bounds everything below it, retries and backoff
//!    included.
//! 2. **circuit breaker**: above retry, so one logical call counts as one
//!    success or failure (retries of a call do not open the circuit on their
//!    own), and an open circuit refuses before any buffering or backoff.
//! 3. **retry**: above the channel, so each attempt may go to another endpoint.
//! 4. **balanced channel**: tonic's p2c balancer over every resolved address.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::transport::Channel;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use super::BoxError;
use super::breaker::{Breaker, BreakerService};
use super::credentials::{BearerSource, CredentialsLayer};
use super::discovery::{self, Target};
use super::outgoing::OutgoingLayer;
use super::retry::{RetryService, RetrySettings};

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

/// Entry point: `Downstream::builder(name, uri)`.
#[derive(Debug)]
pub struct Downstream;

impl Downstream {
    /// A builder for a channel to the downstream `name` at `uri`
    /// (`http://host:port`; `host` may resolve to many addresses).
    pub fn builder(name: &str, uri: &str) -> DownstreamBuilder {
        DownstreamBuilder {
            name: name.to_owned(),
            uri: uri.to_owned(),
            retryable: HashSet::new(),
            default_deadline: Duration::from_secs(30),
            retry: RetrySettings::default(),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(5),
            resolve_every: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            buffer: 1024,
            metrics: None,
            bearer: None,
            tls: None,
        }
    }
}

/// Settings of one downstream channel; every one has a default.
#[derive(Clone, Debug)]
pub struct DownstreamBuilder {
    name: String,
    uri: String,
    retryable: HashSet<String>,
    default_deadline: Duration,
    retry: RetrySettings,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    resolve_every: Duration,
    connect_timeout: Duration,
    buffer: usize,
    metrics: Option<crate::metrics::GrpcMetrics>,
    bearer: Option<Arc<dyn BearerSource>>,
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl DownstreamBuilder {
    /// Methods (full paths, `/package.Service/Method`) that are idempotent and
    /// so may be retried on UNAVAILABLE. No method is retried unless listed.
    pub fn retryable(mut self, paths: &[&str]) -> Self {
        self.retryable
            .extend(paths.iter().map(|path| (*path).to_owned()));
        self
    }

    /// The deadline of calls made outside any served call (default 30 s).
    pub fn default_deadline(mut self, deadline: Duration) -> Self {
        self.default_deadline = deadline;
        self
    }

    /// Attempts per retryable call, the first included (default 3).
    pub fn max_attempts(mut self, attempts: usize) -> Self {
        self.retry.max_attempts = attempts;
        self
    }

    /// First and largest retry backoff (default 25 ms and 1 s).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.retry.base_backoff = base;
        self.retry.max_backoff = max;
        self
    }

    /// Open the circuit after `threshold` consecutive failures, for `cooldown`
    /// (default 5 and 5 s).
    pub fn breaker(mut self, threshold: u32, cooldown: Duration) -> Self {
        self.breaker_threshold = threshold;
        self.breaker_cooldown = cooldown;
        self
    }

    /// How often the host name is resolved again (default 30 s).
    pub fn resolve_every(mut self, every: Duration) -> Self {
        self.resolve_every = every;
        self
    }

    /// Records `grpc_client_*` metrics for calls through this channel (each
    /// call once, retries included in its duration).
    pub fn metrics(mut self, metrics: &crate::metrics::GrpcMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Sends `authorization: Bearer <token>` from `source` on every call that
    /// carries none (service-to-service credentials; see [`ServiceTokens`](super::ServiceTokens)).
    pub fn bearer(mut self, source: Arc<dyn BearerSource>) -> Self {
        self.bearer = Some(source);
        self
    }

    /// Connects over TLS (the address must be `https://`); with a client
    /// identity in `tls`, over mutual TLS. See [`crate::tls::ClientTlsArgs`].
    pub fn tls(mut self, tls: Option<tonic::transport::ClientTlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// How long one connection attempt may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Builds the channel and starts resolving. Must run inside a Tokio
    /// runtime; connections are made lazily, so a downstream that is not up yet
    /// does not fail the build.
    pub fn build(self) -> anyhow::Result<DownstreamChannel> {
        anyhow::ensure!(
            tokio::runtime::Handle::try_current().is_ok(),
            "Downstream::build must be called inside a Tokio runtime"
        );
        anyhow::ensure!(
            !self.resolve_every.is_zero(),
            "resolve_every must be positive"
        );
        let target = Target::parse(&self.uri, self.connect_timeout, self.tls)?;
        let (channel, changes) = Channel::balance_channel::<SocketAddr>(self.buffer);
        tokio::spawn(discovery::run(target, self.resolve_every, changes));

        let channel = channel.map_err(BoxError::from);
        let retry = RetryService::new(channel, self.retryable, self.retry)?;
        let breaker = Arc::new(Breaker::new(self.breaker_threshold, self.breaker_cooldown));
        let guarded = BreakerService::new(retry, breaker.clone(), &self.name);
        let stack = OutgoingLayer::new(self.default_deadline).layer(guarded);
        // Credentials once per logical call, above retries.
        let stack = tower::util::option_layer(self.bearer.map(CredentialsLayer::new)).layer(stack);
        let stack = crate::trace::ClientTraceLayer::new().layer(stack);
        // Metrics outermost: one observation per call as the caller saw it,
        // fast failures of an open circuit included.
        let stack = tower::util::option_layer(
            self.metrics
                .as_ref()
                .map(crate::metrics::ClientMetricsLayer::new),
        )
        .layer(stack);
        Ok(DownstreamChannel {
            name: self.name.into(),
            breaker,
            inner: BoxCloneSyncService::new(stack),
        })
    }
}

/// A client channel to one downstream; give it to a generated client
/// (`InventoryServiceClient::new(channel)`). Cheap to clone; clones share the
/// connections and the circuit breaker.
#[derive(Clone)]
pub struct DownstreamChannel {
    name: Arc<str>,
    breaker: Arc<Breaker>,
    inner: BoxCloneSyncService<Request, Response, BoxError>,
}

impl std::fmt::Debug for DownstreamChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownstreamChannel")
            .field("name", &self.name)
            .field("circuit_open", &self.breaker.is_open())
            .finish_non_exhaustive()
    }
}

impl DownstreamChannel {
    /// The downstream's name, as given to the builder.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True while the circuit is open (calls fail fast) or a probe is out.
    pub fn circuit_open(&self) -> bool {
        self.breaker.is_open()
    }
}

impl Service<Request> for DownstreamChannel {
    type Response = Response;
    type Error = BoxError;
    type Future = <BoxCloneSyncService<Request, Response, BoxError> as Service<Request>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.inner.call(request)
    }
}
