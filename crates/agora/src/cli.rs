//! Command-line interface of the `agora` binary.

use std::path::PathBuf;
use std::time::Duration;

use agora_interceptors::auth::{Role, TokenIssuer, TokenSettings};
use agora_interceptors::telemetry::LogFormat;

use crate::{dev_keys, suite};

/// Agora on one machine: with no subcommand, starts the whole suite with SQLite
/// under the data folder.
#[derive(clap::Parser, Debug)]
#[command(name = "agora", version, about)]
pub struct Cli {
    /// Where SQLite files and development keys live.
    #[arg(long, env = "AGORA_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,

    /// Log format: "pretty" or "json".
    #[arg(
        long,
        env = "AGORA_LOG_FORMAT",
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Developer subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Start the suite (the default).
    Run,
    /// Print an access token signed with the development key.
    Token {
        /// Role of the token: customer, admin or service.
        #[arg(long, default_value = "admin", value_parser = parse_role)]
        role: Role,
        /// Subject: a user id for customers, a name for services.
        #[arg(long, default_value = "dev-admin")]
        sub: String,
        /// Lifetime, e.g. "1h" or "30m".
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not one of customer, admin, service"))
}

/// Runs the chosen command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => suite::run(&cli.data_dir).await,
        Command::Token { role, sub, ttl } => {
            let keys = dev_keys::load_or_create(&cli.data_dir)?;
            let issuer = TokenIssuer::new(&keys.signing, TokenSettings::default())?;
            println!("{}", issuer.issue(&sub, role, ttl)?.token);
            Ok(())
        }
    }
}
