//! Command-line interface of the `agora` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agora_interceptors::auth::{Role, TokenIssuer, TokenSettings};
use agora_interceptors::telemetry::LogFormat;

use crate::demo::{self, Targets};
use crate::suite::{self, Ports, Service, Storage, Suite, SuiteOptions};
use crate::{dev_keys, migrate, probe};

/// Agora on one machine: with no subcommand, starts the whole suite with SQLite
/// under the data folder.
#[derive(clap::Parser, Debug)]
#[command(name = "agora", version, about)]
pub struct Cli {
    /// Where SQLite files and development keys live.
    #[arg(long, env = "AGORA_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,

    /// Keep everything in memory (SQLite and keys): nothing is written under
    /// the data folder and nothing survives the process.
    #[arg(long, env = "AGORA_EPHEMERAL", global = true)]
    pub ephemeral: bool,

    /// Run the suite on this PostgreSQL server instead of SQLite: one
    /// database per service (`agora_user`, `agora_order`, …), created when
    /// missing; the dev keys and passwords stay under the data folder.
    #[arg(
        long,
        env = "AGORA_POSTGRES_URL",
        global = true,
        conflicts_with = "ephemeral"
    )]
    pub postgres: Option<String>,

    /// Prefix of the services' database names with --postgres.
    #[arg(long, default_value = "agora_", global = true)]
    pub postgres_db_prefix: String,

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
    Run {
        /// Each caller's calls per second on every service; 0 turns the
        /// limit off (e.g. for `agora load`).
        #[arg(long, env = "AGORA_RATE_LIMIT_PER_SECOND")]
        rate_limit_per_second: Option<u32>,
    },
    /// Load the suite with orders, closed or open loop, and report orders
    /// per second, latency percentiles, errors, CPU and memory per service
    /// and write transactions per order.
    Load(Box<crate::load::LoadArgs>),
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
    /// Ask a server's grpc.health.v1 whether a service is SERVING: a drop-in
    /// for grpc_health_probe v0.4.56, with its flags (`-addr`, `-service`,
    /// `-connect-timeout`, `-rpc-timeout`, `-tls*`, `-rpc-header`, `-gzip`,
    /// `-user-agent`, `-v`; `agora health -h` lists them) and exit codes (0
    /// serving, 1 invalid arguments, 2 connection failed, 3 call failed, 4 not
    /// serving), so it can serve as a container probe.
    #[command(disable_help_flag = true)]
    Health {
        /// grpc_health_probe's flags, parsed as Go parses them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Apply one service's database migrations (the ones it applies at
    /// start-up) to a database, e.g. a fresh PostgreSQL one.
    Migrate {
        /// Which service's migrations: user, order, payment, inventory or
        /// notification.
        #[arg(long, value_parser = parse_service)]
        service: Service,
        /// The database: `postgres://user@host/db` or `sqlite://path?mode=rwc`.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Domain events of a running suite.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Walk through the suite over gRPC: register, sign in, browse, order,
    /// watch the saga confirm, then see a declined card compensated. Uses the
    /// suite at the standard ports if one is up, else starts an in-memory one.
    Demo {
        /// The user service (host:port); with --order and --inventory, the
        /// suite to use instead of the standard ports.
        #[arg(long, requires_all = ["order", "inventory"])]
        user: Option<SocketAddr>,
        /// The order service (host:port).
        #[arg(long, requires_all = ["user", "inventory"])]
        order: Option<SocketAddr>,
        /// The inventory service (host:port).
        #[arg(long, requires_all = ["user", "order"])]
        inventory: Option<SocketAddr>,
    },
}

/// `agora events …`.
#[derive(clap::Subcommand, Debug)]
pub enum EventsCommand {
    /// Follow the events of the suite at the standard ports (each service's
    /// event feed), one line each: time, service, cursor, type, subject,
    /// per-subject sequence, payload.
    Tail {
        /// Only this service's events (user, order, payment, inventory).
        #[arg(long, value_parser = parse_service)]
        service: Option<Service>,
        /// Only events of this type, e.g. agora.order.OrderConfirmed
        /// (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Resume after this cursor (from an earlier line; needs --service).
        #[arg(long, requires = "service")]
        from: Option<String>,
        /// An admin's or service's token; default: a service token signed
        /// with the development key in the data folder.
        #[arg(long, env = "AGORA_TOKEN")]
        token: Option<String>,
    },
}

/// Where the suite keeps its data, from the global flags.
fn storage(cli: &Cli) -> Storage {
    if let Some(url) = &cli.postgres {
        Storage::Postgres {
            url: url.clone(),
            prefix: cli.postgres_db_prefix.clone(),
            data_dir: cli.data_dir.clone(),
        }
    } else if cli.ephemeral {
        Storage::Ephemeral
    } else {
        Storage::Dir(cli.data_dir.clone())
    }
}

fn parse_service(s: &str) -> Result<Service, String> {
    Service::ALL
        .into_iter()
        .find(|service| service.label() == s)
        .ok_or_else(|| format!("{s:?} is not one of user, order, payment, inventory, notification"))
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not one of customer, admin, service"))
}

/// Runs the chosen command; `Ok(code)` is the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let storage = storage(&cli);
    match cli.command.unwrap_or(Command::Run {
        rate_limit_per_second: None,
    }) {
        Command::Run {
            rate_limit_per_second,
        } => {
            let options = SuiteOptions {
                storage,
                ports: Ports::Standard,
                rate_limit_per_second,
            };
            suite::run(options).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Load(args) => {
            let json = args.json;
            let report = crate::load::run(*args, storage, &cli.data_dir).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.json)?);
            } else {
                println!("{}", report.table());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate {
            service,
            database_url,
        } => {
            let applied = migrate::run(service, &database_url).await?;
            println!(
                "{}: the database is at the latest migration:",
                service.label()
            );
            for line in applied {
                println!("  {line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            user,
            order,
            inventory,
        } => {
            let given = match (user, order, inventory) {
                (Some(user), Some(order), Some(inventory)) => Some(Targets {
                    user,
                    order,
                    inventory,
                }),
                _ => None,
            };
            run_demo(given).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Health { args } => Ok(probe::run(&args).await),
        Command::Events {
            command:
                EventsCommand::Tail {
                    service,
                    types,
                    from,
                    token,
                },
        } => {
            let token = match token {
                Some(token) => token,
                None => {
                    anyhow::ensure!(
                        !cli.ephemeral,
                        "an --ephemeral suite's key lives and dies in its process: pass --token"
                    );
                    let keys = dev_keys::load_or_create(&cli.data_dir)?;
                    let issuer = TokenIssuer::new(&keys.signing, TokenSettings::default())?;
                    issuer
                        .issue(
                            "agora-events-tail",
                            Role::Service,
                            Duration::from_secs(12 * 3600),
                        )?
                        .token
                }
            };
            let standard =
                |service: Service| SocketAddr::from(([127, 0, 0, 1], service.standard_port()));
            let producers = crate::events::producers(standard)
                .into_iter()
                .filter(|(s, _)| service.is_none_or(|wanted| wanted == *s))
                .collect();
            crate::events::tail(producers, types, from, &token, |line| println!("{line}"))
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Token { role, sub, ttl } => {
            anyhow::ensure!(
                !cli.ephemeral,
                "an --ephemeral suite's key lives and dies in its process: use the tokens its banner prints"
            );
            let keys = dev_keys::load_or_create(&cli.data_dir)?;
            let issuer = TokenIssuer::new(&keys.signing, TokenSettings::default())?;
            println!("{}", issuer.issue(&sub, role, ttl)?.token);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The demo against `given` services, the standard ports if a suite answers
/// there, or else a fresh in-memory suite started for the demo.
async fn run_demo(given: Option<Targets>) -> anyhow::Result<()> {
    let mut say = |line: &str| println!("{line}");
    if let Some(targets) = given {
        return demo::run(targets, &mut say).await.map(drop);
    }
    let standard = |service: Service| SocketAddr::from(([127, 0, 0, 1], service.standard_port()));
    let user = standard(Service::User);
    if probe::is_serving(user, Service::User.grpc_name(), Duration::from_secs(1)).await {
        println!("Using the suite at {user} and its neighbours.");
        let targets = Targets {
            user,
            order: standard(Service::Order),
            inventory: standard(Service::Inventory),
        };
        return demo::run(targets, &mut say).await.map(drop);
    }
    println!("No suite answers at {user}: starting one in memory for the demo…");
    let suite = Suite::start(SuiteOptions {
        storage: Storage::Ephemeral,
        ports: Ports::Any,
        rate_limit_per_second: None,
    })
    .await?;
    println!("All five services SERVING after {:.0?}.", suite.startup);
    let targets = Targets {
        user: suite.addr(Service::User),
        order: suite.addr(Service::Order),
        inventory: suite.addr(Service::Inventory),
    };
    let outcome = demo::run(targets, &mut say).await;
    let stopped = suite.stop().await;
    outcome?;
    stopped
}
