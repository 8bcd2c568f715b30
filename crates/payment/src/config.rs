//! Settings of the payment service. Every field is a flag and an environment
//! variable; `agora-payment --help` lists them with these comments.

use std::net::SocketAddr;
use std::time::Duration;

use agora_interceptors::ServeArgs;
use agora_interceptors::config::ServiceKeyArgs;
use agora_interceptors::db::DatabaseArgs;
use agora_interceptors::tls::ClientTlsArgs;

/// The payment service: idempotent charges and refunds through a payment
/// provider (the built-in deterministic test gateway).
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "agora-payment", version, about)]
pub struct PaymentConfig {
    /// Address the gRPC server listens on.
    #[arg(long, env = "AGORA_PAYMENT_LISTEN", default_value = "127.0.0.1:50053")]
    pub listen: SocketAddr,

    /// Longest one call to the payment provider may take (e.g. "10s"). A call
    /// that takes longer counts as a transient failure: the payment stays
    /// PENDING and the next attempt asks again with the same provider key. The
    /// lease on a PENDING payment lasts twice this long.
    #[arg(long, env = "AGORA_PAYMENT_PROVIDER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub provider_timeout: Duration,

    /// How long the test gateway takes to approve the `tok_slow` token
    /// (e.g. "3s"), for exercising deadlines.
    #[arg(long, env = "AGORA_PAYMENT_SLOW_DELAY", default_value = "3s", value_parser = humantime::parse_duration)]
    pub slow_delay: Duration,

    /// How often the reconciler looks for PENDING payments and refunds whose
    /// caller went away (crash, give-up, unanswered UNAVAILABLE) and re-drives
    /// them; it takes rows untouched for at least this long whose lease has
    /// expired. "0s" turns the reconciler off.
    #[arg(long, env = "AGORA_PAYMENT_RECONCILE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,

    /// The payment database.
    /// This service's own key, for reading the revocation list.
    #[command(flatten)]
    pub service_key: ServiceKeyArgs,

    /// TLS towards the user service (for an `https://` AGORA_REVOCATION_URL).
    #[command(flatten)]
    pub downstream_tls: ClientTlsArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Settings shared by every Agora service.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl PaymentConfig {
    /// The defaults, as if no flag or variable were given: for tests and the
    /// suite launcher, which set fields directly instead of touching the
    /// environment.
    pub fn defaults() -> Self {
        <Self as clap::Parser>::parse_from(["agora-payment"])
    }
}
