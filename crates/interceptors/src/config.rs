//! Settings shared by every service binary. Each is a flag and an environment
//! variable (twelve-factor); `--help` shows the doc comments below.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::auth::{KeySet, TokenSettings};

/// How a service is served: auth, health and shutdown settings.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// JSON Web Key Set (RFC 7517) with the Ed25519 public keys that access tokens
    /// may be signed with; several keys may be listed while keys rotate.
    #[arg(long, env = "AGORA_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// Expected `iss` claim of access tokens.
    #[arg(long, env = "AGORA_JWT_ISSUER", default_value = "agora")]
    pub jwt_issuer: String,

    /// Expected `aud` claim of access tokens.
    #[arg(long, env = "AGORA_JWT_AUDIENCE", default_value = "agora")]
    pub jwt_audience: String,

    /// How long in-flight calls may finish after SIGTERM before connections are
    /// closed (e.g. "10s"). Keep it below Kubernetes' terminationGracePeriodSeconds.
    #[arg(long, env = "AGORA_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// How often the readiness probe checks the database (e.g. "2s").
    #[arg(long, env = "AGORA_READINESS_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub readiness_interval: Duration,

    /// Most calls served at once; further calls are refused at once with
    /// RESOURCE_EXHAUSTED instead of queueing past their deadlines.
    #[arg(long, env = "AGORA_MAX_CONCURRENT_CALLS", default_value_t = 1024)]
    pub max_concurrent_calls: usize,

    /// Steady calls per second allowed to each caller (by token subject, else by
    /// peer IP); service-role callers are exempt. 0 turns the limit off.
    #[arg(long, env = "AGORA_RATE_LIMIT_PER_SECOND", default_value_t = 50)]
    pub rate_limit_per_second: u32,

    /// Calls a caller may make in a burst above the steady rate.
    #[arg(long, env = "AGORA_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,

    /// Largest request message accepted, in bytes; larger ones are refused before
    /// they are decoded (tonic answers OUT_OF_RANGE).
    #[arg(long, env = "AGORA_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Deadline of a served call whose caller sent no `grpc-timeout` (e.g. "30s");
    /// the call is answered DEADLINE_EXCEEDED when it passes, and downstream
    /// calls made while serving it get only the time that remains.
    #[arg(long, env = "AGORA_DEFAULT_DEADLINE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub default_deadline: Duration,

    /// Coalesce the replies that are ready at the same moment into one write
    /// (one system call) instead of one write per reply; see
    /// `transport.rs` and BENCHMARKS.md. "false" writes as tonic does.
    #[arg(long, env = "AGORA_WRITE_COALESCING", default_value_t = true, action = clap::ArgAction::Set)]
    pub write_coalescing: bool,

    /// Most connections open at once; further ones wait in the kernel's
    /// backlog until one closes.
    #[arg(long, env = "AGORA_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,

    /// Most calls open at once on one connection (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS); a caller opening more has them
    /// refused (REFUSED_STREAM, which gRPC clients retry).
    #[arg(long, env = "AGORA_MAX_CONCURRENT_STREAMS", default_value_t = 100)]
    pub max_concurrent_streams: u32,

    /// How long a new connection may take to send its HTTP/2 preface (e.g.
    /// "10s") before it is closed.
    #[arg(long, env = "AGORA_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// How long a connection may stay open with no call on it (e.g. "5m")
    /// before it is closed.
    #[arg(long, env = "AGORA_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// How often an HTTP/2 PING checks a connection the peer has sent nothing
    /// on (e.g. "60s"); one unanswered within `keepalive_timeout` closes it.
    #[arg(long, env = "AGORA_KEEPALIVE_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,

    /// How long a keep-alive PING may go unanswered (e.g. "20s").
    #[arg(long, env = "AGORA_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Duration,

    /// How long replies may wait for the caller to read them (a closed HTTP/2
    /// flow-control window or a full TCP window) before the connection is
    /// closed (e.g. "20s").
    #[arg(long, env = "AGORA_SEND_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub send_timeout: Duration,

    /// How long a request body may go without a frame before the call fails
    /// with DEADLINE_EXCEEDED (e.g. "10s"), whatever deadline the caller announced.
    #[arg(long, env = "AGORA_REQUEST_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_body_timeout: Duration,

    /// Secret that page tokens are sealed (HMAC-SHA256) with; every replica
    /// serving the same lists needs the same one. Unset: a random secret per
    /// process (tokens then stop working when it restarts).
    #[arg(long, env = "AGORA_PAGE_TOKEN_SECRET", hide_env_values = true)]
    pub page_token_secret: Option<Secret>,

    /// Log format: "pretty" for people, "json" for log pipelines.
    #[arg(long, env = "AGORA_LOG_FORMAT", default_value = "pretty")]
    pub log_format: crate::telemetry::LogFormat,

    /// Address of the Prometheus endpoint (`GET /metrics`, go-grpc-prometheus
    /// names), e.g. "0.0.0.0:9090". Unset: no endpoint and no call is measured.
    #[arg(long, env = "AGORA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// A metrics listener already bound by whoever starts the service, used
    /// instead of binding `metrics_listen` (set by code, not a flag).
    #[arg(skip)]
    pub metrics_prebound: PreboundListener,

    /// How long domain events stay in the service's outbox (and its event
    /// feed) before they are pruned; a consumer further behind than this
    /// gets OUT_OF_RANGE.
    #[arg(long, env = "AGORA_EVENT_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub event_retention: Duration,

    /// NATS server for domain events (`nats://host:4222`): with it, a relay
    /// publishes every committed event to the service's JetStream stream
    /// (`AGORA_<CONTEXT>`, subjects `agora.<context>.<Event>`, created if
    /// missing). Unset: events are served by the gRPC feed only.
    #[arg(long, env = "AGORA_NATS_URL")]
    pub nats_url: Option<String>,

    /// Prefix of the NATS subjects and stream names (e.g. `staging.`), so
    /// several suites can share one NATS server; empty by default.
    #[arg(long, env = "AGORA_NATS_SUBJECT_PREFIX", default_value = "")]
    pub nats_subject_prefix: String,

    /// The user service whose list of revoked tokens this service follows
    /// (`http://host:port`), calling it with its own service token. The user
    /// service itself reads its own table and ignores this.
    #[arg(
        long,
        env = "AGORA_REVOCATION_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub revocation_url: String,

    /// How often the revocation list is read: a revoked token (deleted or
    /// disabled account, RevokeTokens) is refused everywhere within about
    /// this long. While the user service cannot be read the last list is
    /// kept. 0 turns following off: revoked tokens then work until they
    /// expire (the user service still refuses them itself).
    #[arg(long, env = "AGORA_REVOCATION_POLL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub revocation_poll: Duration,

    /// TLS / mutual TLS of the gRPC port.
    #[command(flatten)]
    pub tls: crate::tls::ServerTlsArgs,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            jwt_jwks_file: None,
            jwt_issuer: "agora".into(),
            jwt_audience: "agora".into(),
            shutdown_grace: Duration::from_secs(10),
            readiness_interval: Duration::from_secs(2),
            max_concurrent_calls: 1024,
            rate_limit_per_second: 50,
            rate_limit_burst: 100,
            max_request_bytes: 1024 * 1024,
            default_deadline: Duration::from_secs(30),
            write_coalescing: true,
            max_connections: 512,
            max_concurrent_streams: 100,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            send_timeout: Duration::from_secs(20),
            request_body_timeout: Duration::from_secs(10),
            page_token_secret: None,
            log_format: crate::telemetry::LogFormat::Pretty,
            metrics_listen: None,
            metrics_prebound: PreboundListener::default(),
            event_retention: Duration::from_secs(7 * 24 * 3600),
            nats_url: None,
            nats_subject_prefix: String::new(),
            revocation_url: "http://127.0.0.1:50051".into(),
            revocation_poll: Duration::from_secs(2),
            tls: crate::tls::ServerTlsArgs::default(),
        }
    }
}

impl ServeArgs {
    /// Issuer, audience and leeway of access tokens.
    pub fn token_settings(&self) -> TokenSettings {
        TokenSettings {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            ..TokenSettings::default()
        }
    }

    /// The bounds on the server's connections.
    pub fn connection_limits(&self) -> crate::connections::ConnectionLimits {
        crate::connections::ConnectionLimits {
            max_connections: self.max_connections,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            send_timeout: self.send_timeout,
            body_progress_timeout: self.request_body_timeout,
        }
    }

    /// The configured key set, or an empty one when no file is configured.
    pub fn key_set(&self) -> anyhow::Result<KeySet> {
        match &self.jwt_jwks_file {
            Some(path) => KeySet::from_file(path),
            None => Ok(KeySet::new()),
        }
    }
}

/// The key a service signs its own `service`-role tokens with: every
/// service but user reads the user service's revocation list with them, and
/// order and notification call other services with them too. See
/// [`crate::auth::ServiceKeys`].
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServiceKeyArgs {
    /// PKCS#8 PEM file with this service's own Ed25519 key, which signs the
    /// short-lived `service`-role tokens it sends (the JWKS of the services
    /// it calls must list its public half under the key id below). Unset: a
    /// random key is made at start-up, which no other process trusts unless
    /// told (fine in-process, e.g. `cargo run`).
    #[arg(long, env = "AGORA_SERVICE_SIGNING_KEY_FILE")]
    pub service_signing_key_file: Option<PathBuf>,

    /// Key id (`kid`) of that key; unset: `agora-<service>`.
    #[arg(long, env = "AGORA_SERVICE_SIGNING_KEY_ID")]
    pub service_signing_key_id: Option<String>,
}

impl ServiceKeyArgs {
    /// The keys: `verifying` for incoming calls, and the signing key named
    /// here (`agora-<service>` by default); `callees` names who must trust
    /// it, for the warning about a random key.
    pub fn load(
        &self,
        service: &str,
        verifying: KeySet,
        callees: &str,
    ) -> anyhow::Result<crate::auth::ServiceKeys> {
        let key_id = self
            .service_signing_key_id
            .clone()
            .unwrap_or_else(|| format!("agora-{service}"));
        crate::auth::ServiceKeys::load(
            self.service_signing_key_file.as_deref(),
            &key_id,
            verifying,
            callees,
        )
    }
}

/// A secret setting: shown as `***` in debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A listener bound before the service starts, handed over once. The
/// one-process suite binds every port up front, so no service's outgoing
/// connection (order's, to the other three) can be given a port another
/// service is about to listen on.
#[derive(Clone, Debug, Default)]
pub struct PreboundListener(Arc<Mutex<Option<std::net::TcpListener>>>);

impl PreboundListener {
    /// Hands `listener` over.
    pub fn new(listener: std::net::TcpListener) -> Self {
        Self(Arc::new(Mutex::new(Some(listener))))
    }

    fn take(&self) -> Option<std::net::TcpListener> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl ServeArgs {
    /// The metrics endpoint's listener: the pre-bound one if there is one,
    /// else `metrics_listen` bound now, else none (metrics off).
    pub async fn bind_metrics(&self) -> anyhow::Result<Option<TcpListener>> {
        if let Some(listener) = self.metrics_prebound.take() {
            listener.set_nonblocking(true)?;
            return Ok(Some(TcpListener::from_std(listener)?));
        }
        match self.metrics_listen {
            Some(address) => {
                Ok(Some(TcpListener::bind(address).await.with_context(
                    || format!("binding the metrics endpoint to {address}"),
                )?))
            }
            None => Ok(None),
        }
    }
}
