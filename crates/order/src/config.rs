//! Settings of the order service. Every field is a flag and an environment
//! variable; `agora-order --help` lists them with these comments.

use std::net::SocketAddr;
use std::time::Duration;

use agora_interceptors::ServeArgs;
use agora_interceptors::config::ServiceKeyArgs;
use agora_interceptors::db::DatabaseArgs;
use agora_interceptors::tls::ClientTlsArgs;

use crate::downstream::DownstreamSettings;
use crate::saga::SagaSettings;

/// The order service: orders and the PlaceOrder saga.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "agora-order", version, about)]
pub struct OrderConfig {
    /// Address the gRPC server listens on.
    #[arg(long, env = "AGORA_ORDER_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,

    /// The user service (`http://host:port`; a host name may resolve to many
    /// addresses). PlaceOrder checks there that the caller's account exists.
    #[arg(long, env = "AGORA_USER_URL", default_value = "http://127.0.0.1:50051")]
    pub user_url: String,

    /// The inventory service (`http://host:port`).
    #[arg(
        long,
        env = "AGORA_INVENTORY_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub inventory_url: String,

    /// The payment service (`http://host:port`).
    #[arg(
        long,
        env = "AGORA_PAYMENT_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub payment_url: String,

    /// This service's own key, signing the `service`-role tokens it sends.
    #[command(flatten)]
    pub service_key: ServiceKeyArgs,

    /// Lifetime of each service token; a new one is signed when a third is
    /// left.
    #[arg(long, env = "AGORA_SERVICE_TOKEN_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub service_token_ttl: Duration,

    /// Whether PlaceOrder asks the user service that the caller's account
    /// still exists (a deleted account's unexpired token is then refused).
    #[arg(long, env = "AGORA_ORDER_CHECK_ACCOUNT", default_value_t = true, action = clap::ArgAction::Set)]
    pub check_account: bool,

    /// Tries of a forward saga step (reserve, charge, commit) before the saga
    /// gives up on transient failures and compensates.
    #[arg(long, env = "AGORA_SAGA_STEP_ATTEMPTS", default_value_t = 4)]
    pub saga_step_attempts: u32,

    /// Longest one downstream call of the saga may take.
    #[arg(long, env = "AGORA_SAGA_ATTEMPT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub saga_attempt_timeout: Duration,

    /// Longest one charge try may take: above the payment provider's own
    /// latency (the payment service gives it AGORA_PAYMENT_PROVIDER_TIMEOUT,
    /// 10s by default), so a slow approval is not cut short.
    #[arg(long, env = "AGORA_SAGA_CHARGE_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub saga_charge_timeout: Duration,

    /// How long the saga keeps asking about a charge whose outcome is
    /// unknown (tries that ran out of time: the provider may still approve)
    /// before it gives up and compensates. The charge is idempotent, so
    /// asking again with the same key finds out what it came to.
    #[arg(long, env = "AGORA_SAGA_CHARGE_RESOLVE_WITHIN", default_value = "2m", value_parser = humantime::parse_duration)]
    pub saga_charge_resolve_within: Duration,

    /// First backoff between tries of a saga step (doubles per try, with
    /// jitter).
    #[arg(long, env = "AGORA_SAGA_RETRY_BASE", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub saga_retry_base: Duration,

    /// Largest backoff between tries of a forward step.
    #[arg(long, env = "AGORA_SAGA_RETRY_MAX", default_value = "5s", value_parser = humantime::parse_duration)]
    pub saga_retry_max: Duration,

    /// Largest backoff between tries of a compensation (release, refund),
    /// which are retried until they succeed.
    #[arg(long, env = "AGORA_SAGA_COMPENSATION_RETRY_MAX", default_value = "60s", value_parser = humantime::parse_duration)]
    pub saga_compensation_retry_max: Duration,

    /// How long a saga runner's lease on an order lasts without renewal. A
    /// live runner renews it every third of this (a heartbeat), also while a
    /// step waits on a slow downstream; a runner silent for longer (crashed,
    /// partitioned) is presumed dead and its order is resumed by another
    /// (whose lease fences the old runner's writes off). Keep it well above
    /// the clock skew between order-service hosts.
    #[arg(long, env = "AGORA_SAGA_LEASE_TTL", default_value = "4s", value_parser = humantime::parse_duration)]
    pub saga_lease_ttl: Duration,

    /// How often unfinished sagas without a live runner are looked for and
    /// resumed (also done at start-up).
    #[arg(long, env = "AGORA_SAGA_RECOVERY_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub saga_recovery_interval: Duration,

    /// How long inventory holds an order's stock before giving it back on
    /// its own (a backstop should this service vanish mid-saga).
    #[arg(long, env = "AGORA_RESERVATION_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub reservation_ttl: Duration,

    /// How often WatchOrder re-reads an order it follows, to see changes made
    /// by other order-service processes (changes made here are seen at once).
    #[arg(long, env = "AGORA_WATCH_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub watch_poll_interval: Duration,

    /// TLS towards user, inventory and payment (for `https://` addresses).
    #[command(flatten)]
    pub downstream_tls: ClientTlsArgs,

    /// The order database.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Settings shared by every Agora service.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl OrderConfig {
    /// The defaults, as if no flag or variable were given: for tests and the
    /// suite launcher, which set fields directly instead of touching the
    /// environment.
    pub fn defaults() -> Self {
        <Self as clap::Parser>::parse_from(["agora-order"])
    }

    /// The saga's retry, lease and recovery settings.
    pub fn saga_settings(&self) -> SagaSettings {
        SagaSettings {
            step_attempts: self.saga_step_attempts.max(1),
            retry_base: self.saga_retry_base,
            retry_max: self.saga_retry_max,
            compensation_retry_max: self.saga_compensation_retry_max,
            attempt_timeout: self.saga_attempt_timeout,
            charge_resolve_within: self.saga_charge_resolve_within,
            lease_ttl: self.saga_lease_ttl,
            recovery_interval: self.saga_recovery_interval,
        }
    }

    /// Where the downstreams are, and how to reach them.
    pub fn downstream_settings(&self) -> anyhow::Result<DownstreamSettings> {
        Ok(DownstreamSettings {
            user_url: self.user_url.clone(),
            inventory_url: self.inventory_url.clone(),
            payment_url: self.payment_url.clone(),
            attempt_timeout: self.saga_attempt_timeout,
            charge_timeout: self.saga_charge_timeout,
            reservation_ttl: self.reservation_ttl,
            tls: self.downstream_tls.load()?,
        })
    }
}
