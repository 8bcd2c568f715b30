//! The gateway's settings: each a flag and an environment variable, named as
//! the services name theirs (`--help` shows the doc comments below).

use std::net::SocketAddr;
use std::time::Duration;

use agora_interceptors::telemetry::LogFormat;
use agora_interceptors::tls::ClientTlsArgs;

/// `agora-gateway`: HTTP/JSON, gRPC-Web and gRPC in front of the four services.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "agora-gateway", version, about)]
pub struct GatewayConfig {
    /// Where the gateway listens (HTTP/1.1 and HTTP/2, cleartext).
    #[arg(long, env = "AGORA_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the user service.
    #[arg(long, env = "AGORA_USER_URL", default_value = "http://127.0.0.1:50051")]
    pub user_url: String,
    /// Address of the order service.
    #[arg(
        long,
        env = "AGORA_ORDER_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub order_url: String,
    /// Address of the payment service.
    #[arg(
        long,
        env = "AGORA_PAYMENT_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub payment_url: String,
    /// Address of the inventory service.
    #[arg(
        long,
        env = "AGORA_INVENTORY_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub inventory_url: String,
    /// Origins browsers may call from (CORS), comma-separated, e.g.
    /// "https://shop.example.com"; "*" allows any. Empty: no CORS headers.
    #[arg(long, env = "AGORA_GATEWAY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Deadline of a call whose caller sent no `grpc-timeout` header.
    #[arg(long, env = "AGORA_DEFAULT_DEADLINE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub default_deadline: Duration,
    /// Deadline of a followed stream (Server-Sent Events) without `grpc-timeout`.
    #[arg(long, env = "AGORA_GATEWAY_STREAM_DEADLINE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub stream_deadline: Duration,
    /// Largest request body accepted, in bytes; larger ones are answered 413.
    #[arg(long, env = "AGORA_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Most calls served at once; further calls are refused at once (429,
    /// RESOURCE_EXHAUSTED) instead of queueing.
    #[arg(long, env = "AGORA_MAX_CONCURRENT_CALLS", default_value_t = 1024)]
    pub max_concurrent_calls: usize,
    /// Steady calls per second allowed to each caller (by bearer token, else by
    /// peer IP). 0 turns the limit off.
    #[arg(long, env = "AGORA_RATE_LIMIT_PER_SECOND", default_value_t = 50)]
    pub rate_limit_per_second: u32,
    /// Calls a caller may make in a burst above the steady rate.
    #[arg(long, env = "AGORA_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,
    /// How often `/readyz` asks the upstreams' health services.
    #[arg(long, env = "AGORA_READINESS_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub readiness_interval: Duration,
    /// How long open requests may finish after SIGTERM.
    #[arg(long, env = "AGORA_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Log format: "pretty" for people, "json" for log pipelines.
    #[arg(long, env = "AGORA_LOG_FORMAT", default_value = "pretty")]
    pub log_format: LogFormat,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    pub print_openapi: bool,
    /// Probe mode for container health checks: GET this URL (e.g.
    /// "http://127.0.0.1:8080/readyz"), exit 0 on a 2xx answer, 1 otherwise.
    #[arg(long, value_name = "URL")]
    pub probe: Option<String>,
    /// TLS towards the services.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

impl GatewayConfig {
    /// The defaults, with the services at the given addresses (the suite and
    /// the tests).
    pub fn with_upstreams(user: &str, order: &str, payment: &str, inventory: &str) -> Self {
        let mut config = <Self as clap::Parser>::parse_from(["agora-gateway"]);
        config.user_url = user.to_owned();
        config.order_url = order.to_owned();
        config.payment_url = payment.to_owned();
        config.inventory_url = inventory.to_owned();
        config
    }
}
