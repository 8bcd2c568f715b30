//! Settings of the notification service. Every field is a flag and an
//! environment variable; `agora-notification --help` lists them with these
//! comments.

use std::net::SocketAddr;
use std::time::Duration;

use agora_interceptors::ServeArgs;
use agora_interceptors::config::ServiceKeyArgs;
use agora_interceptors::db::DatabaseArgs;
use agora_interceptors::tls::ClientTlsArgs;

use crate::consumer::ConsumerSettings;

/// The notification service: tells customers about their orders.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "agora-notification", version, about)]
pub struct NotificationConfig {
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "AGORA_NOTIFICATION_LISTEN",
        default_value = "127.0.0.1:50055"
    )]
    pub listen: SocketAddr,

    /// The order service, whose event feed is consumed (`http://host:port`).
    #[arg(
        long,
        env = "AGORA_ORDER_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub order_url: String,

    /// The payment service, whose event feed is consumed.
    #[arg(
        long,
        env = "AGORA_PAYMENT_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub payment_url: String,

    /// This service's own key, signing the `service`-role tokens it sends.
    #[command(flatten)]
    pub service_key: ServiceKeyArgs,

    /// Lifetime of each service token.
    #[arg(long, env = "AGORA_SERVICE_TOKEN_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub service_token_ttl: Duration,

    /// Tries of one notification before its event goes to the dead letters.
    #[arg(long, env = "AGORA_NOTIFY_MAX_ATTEMPTS", default_value_t = 5)]
    pub notify_max_attempts: u32,

    /// First backoff between tries of a notification (doubles per try).
    #[arg(long, env = "AGORA_NOTIFY_RETRY_BASE", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub notify_retry_base: Duration,

    /// Wait before resubscribing to a feed that failed or is down.
    #[arg(long, env = "AGORA_FEED_RECONNECT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub feed_reconnect: Duration,

    /// How long a replica's hold on a gRPC feed lasts without renewal (it
    /// renews every third of it): several replicas on one database consume
    /// each feed one at a time, and when the holder dies another takes over
    /// within this. Not used with NATS (the durable consumer is shared).
    #[arg(long, env = "AGORA_FEED_LEASE_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub feed_lease_ttl: Duration,

    /// TLS towards the feeds (for `https://` addresses).
    #[command(flatten)]
    pub downstream_tls: ClientTlsArgs,

    /// The notification database.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Settings shared by every Agora service.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl NotificationConfig {
    /// The defaults, as if no flag or variable were given.
    pub fn defaults() -> Self {
        <Self as clap::Parser>::parse_from(["agora-notification"])
    }

    /// How the consumer retries.
    pub fn consumer_settings(&self) -> ConsumerSettings {
        ConsumerSettings {
            max_attempts: self.notify_max_attempts.max(1),
            retry_base: self.notify_retry_base,
            reconnect: self.feed_reconnect,
            lease_ttl: self.feed_lease_ttl,
        }
    }
}
