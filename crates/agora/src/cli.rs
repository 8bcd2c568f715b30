//! Command-line interface of the `agora` binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agora_interceptors::auth::{Role, TokenIssuer, TokenSettings};
use agora_interceptors::telemetry::LogFormat;

use crate::{dev_keys, probe, suite};

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
    /// Ask a server's grpc.health.v1 whether a service is SERVING; exits like
    /// grpc_health_probe (0 serving, 1 invalid arguments, 2 connection failed,
    /// 3 call failed, 4 not serving), so it can serve as a container probe.
    Health {
        /// Address of the server, host:port.
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: String,
        /// Service to ask about; empty means the server as a whole.
        #[arg(long, default_value = "")]
        service: String,
        /// How long to wait for an answer.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not one of customer, admin, service"))
}

/// Runs the chosen command; `Ok(code)` is the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => suite::run(&cli.data_dir).await.map(|()| ExitCode::SUCCESS),
        Command::Health {
            addr,
            service,
            timeout,
        } => Ok(probe::check(&addr, &service, timeout).await),
        Command::Token { role, sub, ttl } => {
            let keys = dev_keys::load_or_create(&cli.data_dir)?;
            let issuer = TokenIssuer::new(&keys.signing, TokenSettings::default())?;
            println!("{}", issuer.issue(&sub, role, ttl)?.token);
            Ok(ExitCode::SUCCESS)
        }
    }
}
