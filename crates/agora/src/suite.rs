//! Starts every service in this process, each on its own port with its own
//! database (a SQLite file, in memory, or on a PostgreSQL server) and metrics
//! port, and stops them together.
//!
//! [`run`] is `cargo run`: start, print the banner, wait for Ctrl-C or
//! SIGTERM, stop. [`Suite::start`] is the same start for `agora demo` and the
//! tests, which may ask for in-memory databases and any free ports.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agora_interceptors::auth::ServiceKeys;
use agora_interceptors::config::PreboundListener;
use agora_interceptors::db::DatabaseArgs;
use agora_interceptors::{ServeArgs, health, shutdown};
use agora_inventory::InventoryConfig;
use agora_notification::{NotificationConfig, NotificationKeys};
use agora_order::{OrderConfig, OrderKeys};
use agora_payment::PaymentConfig;
use agora_proto::user::v1 as user_pb;
use agora_user::seed::SeedAccount;
use agora_user::{UserConfig, UserKeys};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::dev_accounts::{self, DevAccounts};
use crate::dev_keys::{self, DevKeys};

/// Where the services keep their data.
#[derive(Clone, Debug)]
pub enum Storage {
    /// One SQLite file per service in this folder, with the dev keys and the
    /// dev accounts' passwords; everything survives a restart.
    Dir(PathBuf),
    /// In-memory SQLite and in-memory keys: nothing is written, nothing kept.
    Ephemeral,
    /// One database per service on a PostgreSQL server, named
    /// `<prefix><service>` and created when missing; the dev keys and
    /// passwords in `data_dir`, as with [`Storage::Dir`].
    Postgres {
        /// Any database on the server, to connect to for creating the
        /// services' ones: `postgres://user@host:port/postgres`.
        url: String,
        /// Database name prefix, e.g. `agora_` for `agora_order`.
        prefix: String,
        /// Where the dev keys and passwords live.
        data_dir: PathBuf,
    },
}

/// Which ports the services listen on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ports {
    /// 50051–50055 for gRPC and 50151–50155 for metrics, on 127.0.0.1.
    Standard,
    /// Any free ports on 127.0.0.1, without metrics endpoints (tests, and a
    /// demo run while another suite holds the standard ones).
    Any,
    /// Any free ports on 127.0.0.1, metrics endpoints included (`agora load
    /// --start` reads the services' counters).
    AnyWithMetrics,
}

/// How to start the suite.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// Where data lives.
    pub storage: Storage,
    /// Which ports.
    pub ports: Ports,
    /// Each caller's calls per second on every service (`Some(0)`: no
    /// limit); `None` keeps the services' default.
    pub rate_limit_per_second: Option<u32>,
}

/// The five services of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// agora.user.v1.UserService
    User,
    /// agora.order.v1.OrderService
    Order,
    /// agora.payment.v1.PaymentService
    Payment,
    /// agora.inventory.v1.InventoryService
    Inventory,
    /// agora.notification.v1.NotificationService
    Notification,
}

impl Service {
    /// All five, in port order.
    pub const ALL: [Service; 5] = [
        Service::User,
        Service::Order,
        Service::Payment,
        Service::Inventory,
        Service::Notification,
    ];

    /// Short name.
    pub fn label(self) -> &'static str {
        match self {
            Service::User => "user",
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Inventory => "inventory",
            Service::Notification => "notification",
        }
    }

    /// Fully qualified gRPC service name (also its health-check name).
    pub fn grpc_name(self) -> &'static str {
        match self {
            Service::User => "agora.user.v1.UserService",
            Service::Order => "agora.order.v1.OrderService",
            Service::Payment => "agora.payment.v1.PaymentService",
            Service::Inventory => "agora.inventory.v1.InventoryService",
            Service::Notification => "agora.notification.v1.NotificationService",
        }
    }

    /// Its standard gRPC port; metrics listen 100 above.
    pub fn standard_port(self) -> u16 {
        match self {
            Service::User => 50051,
            Service::Order => 50052,
            Service::Payment => 50053,
            Service::Inventory => 50054,
            Service::Notification => 50055,
        }
    }
}

/// One service of the suite once bound.
#[derive(Debug)]
pub struct Running {
    /// Which service.
    pub service: Service,
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    /// Where it serves `/metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// `None` once its outcome has been read (it ended during start-up).
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A seeded account, signed in.
#[derive(Clone, Debug)]
pub struct Session {
    /// The account's email.
    pub email: String,
    /// Its password.
    pub password: String,
    /// An access token from Authenticate.
    pub token: String,
}

/// The running suite.
#[derive(Debug)]
pub struct Suite {
    /// The services, in port order.
    pub services: Vec<Running>,
    /// Where the API gateway serves HTTP/JSON, gRPC-Web and gRPC.
    pub gateway: SocketAddr,
    gateway_task: Option<JoinHandle<anyhow::Result<()>>>,
    /// The seeded admin, signed in.
    pub admin: Session,
    /// The seeded customer, signed in.
    pub customer: Session,
    /// Where the dev accounts' passwords are kept, if anywhere.
    pub passwords_file: Option<PathBuf>,
    /// How long the start took, until all five answered SERVING.
    pub startup: Duration,
    stop: watch::Sender<bool>,
}

/// Where `cargo run` serves the API gateway.
pub const GATEWAY_PORT: u16 = 8080;

/// How long tokens handed out by the development suite live: a working day.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// `cargo run`: starts the suite, prints the banner, runs until a shutdown
/// signal, then stops every service (each drains its calls, bounded).
pub async fn run(options: SuiteOptions) -> anyhow::Result<()> {
    let suite = Suite::start(options).await?;
    crate::banner::print(&suite);
    shutdown::signal().await;
    suite.stop().await?;
    println!("agora stopped cleanly");
    Ok(())
}

impl Suite {
    /// Starts the five services, waits until each answers SERVING over gRPC,
    /// and signs the seeded accounts in.
    pub async fn start(options: SuiteOptions) -> anyhow::Result<Suite> {
        let started = Instant::now();
        let (keys, accounts) = match &options.storage {
            Storage::Dir(dir) | Storage::Postgres { data_dir: dir, .. } => (
                dev_keys::load_or_create(dir)?,
                dev_accounts::load_or_create(dir)?,
            ),
            Storage::Ephemeral => (dev_keys::in_memory()?, dev_accounts::in_memory()),
        };
        let database_urls = match &options.storage {
            Storage::Postgres { url, prefix, .. } => {
                Some(crate::postgres::create_databases(url, prefix).await?)
            }
            _ => None,
        };
        let (stop, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let place = Placement {
            storage: &options.storage,
            database_urls: database_urls.as_ref(),
            ports: options.ports,
            rate_limit_per_second: options.rate_limit_per_second,
            keys: &keys,
        };

        let mut user = UserConfig::defaults();
        place.configure(Service::User, &mut user.database, &mut user.serve)?;
        user.access_token_ttl = DEV_TOKEN_TTL;
        user.seed_accounts = vec![accounts.admin.clone(), accounts.customer.clone()];
        let user_keys = UserKeys::with_verifying(keys.signing.clone(), keys.key_set.clone());
        let user = place
            .spawn(Service::User, user.serve.metrics_listen, |listener| {
                agora_user::serve(user, user_keys, listener, stopped())
            })
            .await?;

        // Every other service follows the user service's revocation list
        // with service tokens signed by the dev key, which it trusts.
        let service_keys = || ServiceKeys {
            verifying: keys.key_set.clone(),
            service: keys.signing.clone(),
        };
        let user_url = format!("http://{}", user.addr);
        let mut payment = PaymentConfig::defaults();
        place.configure(Service::Payment, &mut payment.database, &mut payment.serve)?;
        payment.serve.revocation_url = user_url.clone();
        let payment_keys = service_keys();
        let payment = place
            .spawn(Service::Payment, payment.serve.metrics_listen, |listener| {
                agora_payment::serve(payment, payment_keys, listener, stopped())
            })
            .await?;

        let mut inventory = InventoryConfig::defaults();
        place.configure(
            Service::Inventory,
            &mut inventory.database,
            &mut inventory.serve,
        )?;
        inventory.seed_demo = true;
        inventory.serve.revocation_url = user_url.clone();
        let inventory_keys = service_keys();
        let inventory = place
            .spawn(
                Service::Inventory,
                inventory.serve.metrics_listen,
                |listener| agora_inventory::serve(inventory, inventory_keys, listener, stopped()),
            )
            .await?;

        // Order calls the other three, wherever they ended up; its service
        // key is the dev signing key, which they all trust.
        let mut order = OrderConfig::defaults();
        place.configure(Service::Order, &mut order.database, &mut order.serve)?;
        order.user_url = user_url.clone();
        order.serve.revocation_url = user_url.clone();
        order.payment_url = format!("http://{}", payment.addr);
        order.inventory_url = format!("http://{}", inventory.addr);
        let order_keys: OrderKeys = service_keys();
        let order = place
            .spawn(Service::Order, order.serve.metrics_listen, |listener| {
                agora_order::serve(order, order_keys, listener, stopped())
            })
            .await?;

        // Notification follows the order and payment feeds, with the dev
        // signing key as its service key too.
        let mut notification = NotificationConfig::defaults();
        place.configure(
            Service::Notification,
            &mut notification.database,
            &mut notification.serve,
        )?;
        notification.order_url = format!("http://{}", order.addr);
        notification.payment_url = format!("http://{}", payment.addr);
        notification.serve.revocation_url = user_url;
        let notification_keys: NotificationKeys = service_keys();
        let notification = place
            .spawn(
                Service::Notification,
                notification.serve.metrics_listen,
                |listener| {
                    agora_notification::serve(notification, notification_keys, listener, stopped())
                },
            )
            .await?;

        // The gateway in front of all four, on :8080 (or any free port).
        let gateway_port = match options.ports {
            Ports::Standard => GATEWAY_PORT,
            Ports::Any | Ports::AnyWithMetrics => 0,
        };
        let gateway_addr = SocketAddr::from(([127, 0, 0, 1], gateway_port));
        let gateway_listener = TcpListener::bind(gateway_addr).await.with_context(|| {
            format!("binding the gateway to {gateway_addr} (is another suite running?)")
        })?;
        let gateway = gateway_listener.local_addr()?;
        let mut gateway_config = agora_gateway::GatewayConfig::with_upstreams(
            &format!("http://{}", user.addr),
            &format!("http://{}", order.addr),
            &format!("http://{}", payment.addr),
            &format!("http://{}", inventory.addr),
        );
        gateway_config.listen = gateway;
        // Development: any page on this machine may call it from a browser.
        gateway_config.allowed_origins = vec!["*".to_owned()];
        gateway_config.readiness_interval = Duration::from_millis(500);
        let gateway_task = {
            let gateway = agora_gateway::Gateway::new(&gateway_config)?;
            tokio::spawn(gateway.serve(gateway_listener, stopped()))
        };

        let services = vec![user, order, payment, inventory, notification];
        let mut suite = Suite {
            services,
            gateway,
            gateway_task: Some(gateway_task),
            admin: Session::unsigned(&accounts.admin),
            customer: Session::unsigned(&accounts.customer),
            passwords_file: accounts.passwords_file.clone(),
            startup: Duration::ZERO,
            stop,
        };
        if let Err(error) = suite.wait_until_serving().await {
            let _ = suite.stop().await;
            return Err(error);
        }
        if let Err(error) = suite.sign_in(&accounts).await {
            let _ = suite.stop().await;
            return Err(error);
        }
        suite.startup = started.elapsed();
        Ok(suite)
    }

    /// Where `service` serves gRPC.
    pub fn addr(&self, service: Service) -> SocketAddr {
        self.running(service).addr
    }

    fn running(&self, service: Service) -> &Running {
        self.services
            .iter()
            .find(|running| running.service == service)
            .expect("the suite runs every service")
    }

    /// Every service SERVING, checked over gRPC as a probe would. A service
    /// that failed to start ends the wait with its own error.
    async fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let waits = self.services.iter().map(|running| {
            let channel = channel_to(running.addr);
            health::wait_until_serving(
                channel,
                running.service.grpc_name(),
                Duration::from_secs(30),
            )
        });
        let ready = futures::future::join_all(waits);
        let failed = futures::future::select_all(
            self.services
                .iter_mut()
                .filter_map(|running| running.task.as_mut()),
        );
        let (result, index) = tokio::select! {
            results = ready => {
                return results.into_iter().collect::<Result<Vec<_>, _>>().map(drop);
            }
            (result, index, _) = failed => (result, index),
        };
        // That task's outcome is read: `stop` must not wait for it again.
        let running = &mut self.services[index];
        running.task = None;
        let label = running.service.label();
        match result {
            Ok(Ok(())) => anyhow::bail!("the {label} service stopped during start-up"),
            Ok(Err(error)) => Err(error.context(format!("starting the {label} service"))),
            Err(error) => Err(anyhow::Error::new(error).context(format!("the {label} service"))),
        }
    }

    /// Authenticate each seeded account, through the user service's API.
    async fn sign_in(&mut self, accounts: &DevAccounts) -> anyhow::Result<()> {
        let channel = channel_to(self.addr(Service::User));
        for (account, session) in [
            (&accounts.admin, &mut self.admin),
            (&accounts.customer, &mut self.customer),
        ] {
            let reply = authenticate(channel.clone(), &account.email, &account.password)
                .await
                .map_err(|status| match &accounts.passwords_file {
                    Some(file) if status.code() == tonic::Code::Unauthenticated => anyhow::anyhow!(
                        "{} exists in the user database but its password is not the one in {}; \
                         remove the data folder (or set that account's password back) to start afresh",
                        account.email,
                        file.display()
                    ),
                    _ => anyhow::anyhow!("signing in {}: {}", account.email, status.message()),
                })?;
            session.token = reply.access_token;
        }
        Ok(())
    }

    /// Stops every service (each goes NOT_SERVING, stops accepting, drains
    /// its calls up to its grace period) and reports the first failure.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let mut failed = None;
        if let Some(task) = self.gateway_task {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => failed = Some(error.context("gateway")),
                Err(error) => failed = Some(anyhow::Error::new(error).context("gateway")),
            }
        }
        for running in self.services {
            let label = running.service.label();
            let Some(task) = running.task else { continue };
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => failed = failed.or(Some(error.context(label))),
                Err(error) => failed = failed.or(Some(anyhow::Error::new(error).context(label))),
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// How long the launcher keeps signing in while the user service asks it to
/// come back later (a burst of other local callers spent the rate limit).
const SIGN_IN_PATIENCE: Duration = Duration::from_secs(30);

/// Signs an account in through Authenticate. A refusal carrying RetryInfo (the
/// per-caller rate limit, which the launcher shares with every anonymous
/// local caller) is retried after the wait it names, for up to
/// [`SIGN_IN_PATIENCE`]; anything else is the answer.
pub async fn authenticate(
    channel: Channel,
    email: &str,
    password: &str,
) -> Result<user_pb::AuthenticateResponse, tonic::Status> {
    let mut users = user_pb::user_service_client::UserServiceClient::new(channel);
    let give_up = Instant::now() + SIGN_IN_PATIENCE;
    loop {
        let request = user_pb::AuthenticateRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        };
        let status = match users.authenticate(request).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status) => status,
        };
        match agora_interceptors::api::errors::retry_delay(&status) {
            Some(wait) if Instant::now() + wait < give_up => {
                tracing::info!(%email, ?wait, "signing in: {}; retrying", status.message());
                tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
            }
            _ => return Err(status),
        }
    }
}

impl Session {
    fn unsigned(account: &SeedAccount) -> Self {
        Session {
            email: account.email.clone(),
            password: account.password.clone(),
            token: String::new(),
        }
    }
}

/// Where each service's data, keys and ports go.
struct Placement<'a> {
    storage: &'a Storage,
    /// Each service's PostgreSQL database, by label.
    database_urls: Option<&'a std::collections::BTreeMap<&'static str, String>>,
    ports: Ports,
    rate_limit_per_second: Option<u32>,
    keys: &'a DevKeys,
}

impl Placement<'_> {
    /// Database, verifying keys and metrics port of one service. The metrics
    /// port is bound here, before any service runs (see `PreboundListener`).
    fn configure(
        &self,
        service: Service,
        database: &mut DatabaseArgs,
        serve: &mut ServeArgs,
    ) -> anyhow::Result<()> {
        database.database_url = Some(match self.storage {
            Storage::Dir(dir) => {
                format!("sqlite://{}/{}.db?mode=rwc", dir.display(), service.label())
            }
            Storage::Ephemeral => "sqlite::memory:".to_owned(),
            Storage::Postgres { .. } => self
                .database_urls
                .and_then(|urls| urls.get(service.label()))
                .context("the service's PostgreSQL database was not created")?
                .clone(),
        });
        serve.jwt_jwks_file = self.keys.jwks_file.clone();
        if let Some(limit) = self.rate_limit_per_second {
            serve.rate_limit_per_second = limit;
        }
        serve.metrics_listen = None;
        let metrics_port = match self.ports {
            Ports::Standard => Some(service.standard_port() + 100),
            Ports::AnyWithMetrics => Some(0),
            Ports::Any => None,
        };
        if let Some(port) = metrics_port {
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            let listener = std::net::TcpListener::bind(address).with_context(|| {
                format!(
                    "binding the {} service's metrics endpoint to {address} (is another suite running?)",
                    service.label()
                )
            })?;
            serve.metrics_listen = Some(listener.local_addr()?);
            serve.metrics_prebound = PreboundListener::new(listener);
        }
        Ok(())
    }

    /// Binds the service's port and starts serving on it.
    async fn spawn<F>(
        &self,
        service: Service,
        metrics: Option<SocketAddr>,
        serve: impl FnOnce(TcpListener) -> F,
    ) -> anyhow::Result<Running>
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let port = match self.ports {
            Ports::Standard => service.standard_port(),
            Ports::Any | Ports::AnyWithMetrics => 0,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!(
                "binding the {} service to {addr} (is another suite running?)",
                service.label()
            )
        })?;
        Ok(Running {
            service,
            addr: listener.local_addr()?,
            metrics,
            task: Some(tokio::spawn(serve(listener))),
        })
    }
}

/// A lazily connecting plaintext channel to `addr`.
pub fn channel_to(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a socket address is a valid URI")
        .connect_lazy()
}
