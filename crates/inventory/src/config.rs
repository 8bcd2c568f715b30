//! Settings of the inventory service. Every field is a flag and an environment
//! variable; `agora-inventory --help` lists them with these comments.

use std::net::SocketAddr;
use std::time::Duration;

use agora_interceptors::ServeArgs;
use agora_interceptors::config::ServiceKeyArgs;
use agora_interceptors::db::DatabaseArgs;
use agora_interceptors::tls::ClientTlsArgs;

/// The inventory service: catalogue, stock and reservations.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "agora-inventory", version, about)]
pub struct InventoryConfig {
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "AGORA_INVENTORY_LISTEN",
        default_value = "127.0.0.1:50054"
    )]
    pub listen: SocketAddr,

    /// How long a reservation is held when ReserveStock gives no ttl (e.g.
    /// "15m"). Capped at the maximum below.
    #[arg(long, env = "AGORA_RESERVATION_DEFAULT_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub reservation_default_ttl: Duration,

    /// Longest ttl a ReserveStock may ask for (e.g. "24h"); longer requests
    /// are refused with INVALID_ARGUMENT.
    #[arg(long, env = "AGORA_RESERVATION_MAX_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub reservation_max_ttl: Duration,

    /// How often expired HELD reservations are looked for and their stock
    /// given back (e.g. "5s"). A hold is released at most this long after it
    /// expires; committing it fails from the moment it expires.
    #[arg(long, env = "AGORA_RESERVATION_SWEEP_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reservation_sweep_interval: Duration,

    /// Add a small demo catalogue (SKU-MUG, SKU-TEE, …, with stock) at start,
    /// unless it is already there. For trying things out, not production.
    /// The variable takes true/false, 1/0, yes/no or on/off.
    #[arg(long, env = "AGORA_SEED_DEMO", value_parser = clap::builder::BoolishValueParser::new())]
    pub seed_demo: bool,

    /// The inventory database.
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

impl InventoryConfig {
    /// The defaults, as if no flag or variable were given: for tests and the
    /// suite launcher, which set fields directly instead of touching the
    /// environment.
    pub fn defaults() -> Self {
        <Self as clap::Parser>::parse_from(["agora-inventory"])
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn flags_parse_and_default() {
        let config = InventoryConfig::try_parse_from(["agora-inventory"]).unwrap();
        assert_eq!(config.listen.port(), 50054);
        assert_eq!(config.reservation_default_ttl, Duration::from_secs(15 * 60));
        assert_eq!(config.reservation_max_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(config.reservation_sweep_interval, Duration::from_secs(5));
        let config = InventoryConfig::try_parse_from([
            "agora-inventory",
            "--seed-demo",
            "--reservation-sweep-interval",
            "250ms",
        ])
        .unwrap();
        assert!(config.seed_demo);
        assert_eq!(
            config.reservation_sweep_interval,
            Duration::from_millis(250)
        );
    }
}
