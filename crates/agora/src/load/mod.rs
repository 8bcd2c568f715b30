//! `agora load`: a gRPC-native load generator for the flow Agora exists for,
//! PlaceOrder end to end.
//!
//! It signs up a pool of customers, creates and tops up the products it
//! orders (as the seeded admin), then places orders for `--duration`: in a
//! closed loop of `--concurrency` workers, or in an open loop at `--rate`
//! orders per second (latency then counts from when an order was due, so a
//! slow suite cannot hide its queueing). A share of orders pays with a card
//! that is declined (`--decline-share`), a share of the confirmed ones is
//! cancelled (`--cancel-share`), and `--watchers` tasks follow the latest
//! orders with WatchOrder. A progress line goes to stderr each second; the
//! report (a table, or JSON with `--json`) has orders per second by final
//! state, PlaceOrder latency percentiles, errors by gRPC code, CPU and peak
//! RSS per service process (from /proc, when the suite is on this machine)
//! and write transactions per order (from the services'
//! `agora_db_write_transactions_total`).
//!
//! It drives a suite already running (`--target HOST`, standard ports), or
//! starts one in this process (`--start`, with the suite's storage flags).

mod procfs;
mod report;
mod setup;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agora_proto::order::v1 as order_pb;
use anyhow::Context;
use futures::StreamExt;
use hdrhistogram::Histogram;
use order_pb::order_service_client::OrderServiceClient;
use tokio::sync::{Mutex, Semaphore};
use tonic::transport::Channel;

use crate::suite::{Ports, Service, Storage, Suite, SuiteOptions, channel_to};

pub use report::Report;

/// `agora load`'s flags.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Host of a running suite, at the standard ports (gRPC 50051–50054,
    /// metrics 50151–50154).
    #[arg(long, default_value = "127.0.0.1")]
    pub target: String,

    /// Start a suite in this process instead, with the storage the global
    /// flags name (`--data-dir`, `--ephemeral`, `--postgres`), on free ports
    /// and with rate limits off. Its CPU figures then include the load
    /// generator's own.
    #[arg(long)]
    pub start: bool,

    /// How long to place orders (after the set-up), e.g. "10s" or "1m".
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Closed loop: this many workers, each placing its next order when the
    /// last one is answered.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,

    /// Open loop instead: orders per second, whatever the answers take.
    #[arg(long)]
    pub rate: Option<f64>,

    /// How many products the orders spread over (each order: 1 unit of one).
    #[arg(long, default_value_t = 16)]
    pub skus: usize,

    /// Every order wants the same product (inventory's hot row).
    #[arg(long)]
    pub hot_sku: bool,

    /// Share of orders (0 to 1) paid with a card that is declined.
    #[arg(long, default_value_t = 0.0)]
    pub decline_share: f64,

    /// Share of confirmed orders (0 to 1) cancelled right away.
    #[arg(long, default_value_t = 0.0)]
    pub cancel_share: f64,

    /// Tasks following the latest placed order with WatchOrder, over and over.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,

    /// Customers to sign up; orders take turns among them (each customer
    /// has its own rate limit in a suite that keeps them on).
    #[arg(long, default_value_t = 64)]
    pub customers: usize,

    /// Units each product is topped up to before the run.
    #[arg(long, default_value_t = 100_000_000)]
    pub stock: i64,

    /// An admin access token (for a running suite; else the seeded admin
    /// signs in with the password kept under the data folder).
    #[arg(long, env = "AGORA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Print the report as JSON on stdout (the progress lines stay on stderr).
    #[arg(long)]
    pub json: bool,

    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Where the suite under load is.
#[derive(Clone, Debug)]
pub struct Targets {
    /// Each service's gRPC address.
    pub grpc: BTreeMap<&'static str, SocketAddr>,
    /// Each service's metrics address, where known.
    pub metrics: BTreeMap<&'static str, SocketAddr>,
}

impl Targets {
    fn grpc(&self, service: Service) -> SocketAddr {
        self.grpc[service.label()]
    }
}

/// Runs `agora load`: against a running suite, or one it starts with
/// `storage`.
pub async fn run(
    args: LoadArgs,
    storage: Storage,
    data_dir: &std::path::Path,
) -> anyhow::Result<Report> {
    validate(&args)?;
    if args.start {
        let suite = Suite::start(SuiteOptions {
            storage,
            ports: Ports::AnyWithMetrics,
            rate_limit_per_second: Some(0),
        })
        .await
        .context("starting the suite")?;
        let targets = Targets {
            grpc: Service::ALL
                .iter()
                .map(|s| (s.label(), suite.addr(*s)))
                .collect(),
            metrics: suite
                .services
                .iter()
                .filter_map(|r| Some((r.service.label(), r.metrics?)))
                .collect(),
        };
        let processes = vec![procfs::Process::this(
            "suite + load generator (one process)",
        )];
        let outcome = drive(&args, &targets, suite.admin.token.clone(), processes).await;
        let stopped = suite.stop().await;
        let report = outcome?;
        stopped?;
        return Ok(report);
    }
    let host: std::net::IpAddr = tokio::net::lookup_host((args.target.as_str(), 0))
        .await
        .with_context(|| format!("resolving {}", args.target))?
        .next()
        .with_context(|| format!("{} has no address", args.target))?
        .ip();
    let targets = Targets {
        grpc: Service::ALL
            .iter()
            .map(|s| (s.label(), SocketAddr::new(host, s.standard_port())))
            .collect(),
        metrics: Service::ALL
            .iter()
            .map(|s| (s.label(), SocketAddr::new(host, s.standard_port() + 100)))
            .collect(),
    };
    let admin = match &args.admin_token {
        Some(token) => token.clone(),
        None => setup::admin_token(targets.grpc(Service::User), data_dir).await?,
    };
    let processes = if host.is_loopback() {
        procfs::suite_processes(&targets)
    } else {
        Vec::new()
    };
    drive(&args, &targets, admin, processes).await
}

fn validate(args: &LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.skus > 0, "--skus must be at least 1");
    anyhow::ensure!(args.customers > 0, "--customers must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.decline_share) && (0.0..=1.0).contains(&args.cancel_share),
        "--decline-share and --cancel-share are shares, from 0 to 1"
    );
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be above 0");
    }
    Ok(())
}

/// What one placed order ended as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    Confirmed,
    Failed,
    Cancelled,
    Pending,
    Other,
}

impl Outcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Pending => "pending",
            Outcome::Other => "other",
        }
    }
}

/// What the run has seen so far, shared by the workers.
pub(crate) struct Stats {
    pub(crate) latency: Histogram<u64>,
    pub(crate) outcomes: BTreeMap<Outcome, u64>,
    pub(crate) errors: BTreeMap<&'static str, u64>,
    pub(crate) cancel_latency: Histogram<u64>,
}

impl Stats {
    fn new() -> Self {
        Self {
            latency: new_histogram(),
            outcomes: BTreeMap::new(),
            errors: BTreeMap::new(),
            cancel_latency: new_histogram(),
        }
    }
}

/// Microseconds from 1 µs to 10 minutes, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Everything a worker needs.
struct Shared {
    orders: OrderServiceClient<Channel>,
    customers: Vec<String>,
    skus: Vec<String>,
    args: LoadArgs,
    stats: Mutex<Stats>,
    next: AtomicU64,
    stop: AtomicBool,
    latest: std::sync::Mutex<Option<(String, usize)>>,
    watch_updates: AtomicU64,
}

/// Set-up, the measured run, and the report.
async fn drive(
    args: &LoadArgs,
    targets: &Targets,
    admin_token: String,
    processes: Vec<procfs::Process>,
) -> anyhow::Result<Report> {
    let say = |line: &str| {
        if !args.quiet {
            eprintln!("{line}");
        }
    };
    say(&format!(
        "agora load: signing up {} customers and topping up {} product(s)…",
        args.customers,
        if args.hot_sku { 1 } else { args.skus }
    ));
    let customers = setup::customers(targets.grpc(Service::User), args.customers).await?;
    let skus = setup::stock(
        targets.grpc(Service::Inventory),
        &admin_token,
        if args.hot_sku { 1 } else { args.skus },
        args.stock,
    )
    .await?;
    let order_channel = channel_to(targets.grpc(Service::Order));
    let shared = Arc::new(Shared {
        orders: OrderServiceClient::new(order_channel),
        customers,
        skus,
        args: args.clone(),
        stats: Mutex::new(Stats::new()),
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        latest: std::sync::Mutex::new(None),
        watch_updates: AtomicU64::new(0),
    });
    let stock_before = setup::available(targets.grpc(Service::Inventory), &shared.skus).await?;

    say(&match args.rate {
        Some(rate) => format!(
            "placing orders for {:?} at {rate}/s (open loop)…",
            args.duration
        ),
        None => format!(
            "placing orders for {:?} with {} workers (closed loop)…",
            args.duration, args.concurrency
        ),
    });
    let writes_before = report::scrape_writes(&targets.metrics).await;
    let cpu_before: Vec<_> = processes.iter().map(procfs::Process::cpu).collect();
    let started = Instant::now();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.watchers {
        let shared = shared.clone();
        tasks.spawn(async move { watcher(shared).await });
    }
    let load = {
        let shared = shared.clone();
        tokio::spawn(async move {
            match shared.args.rate {
                Some(rate) => open_loop(shared, rate).await,
                None => closed_loop(shared).await,
            }
        })
    };
    progress(&shared, started, args.duration, args.quiet).await;
    shared.stop.store(true, Ordering::Relaxed);
    load.await.context("the load task")?;
    let elapsed = started.elapsed();
    let cpu_after: Vec<_> = processes.iter().map(procfs::Process::cpu).collect();
    let writes_after = report::scrape_writes(&targets.metrics).await;
    tasks.shutdown().await;

    let stock_after = setup::available(targets.grpc(Service::Inventory), &shared.skus).await?;
    let stats = shared.stats.lock().await;
    Ok(Report::new(report::Inputs {
        args,
        elapsed,
        stats: &stats,
        processes: &processes,
        cpu_before: &cpu_before,
        cpu_after: &cpu_after,
        writes_before: &writes_before,
        writes_after: &writes_after,
        stock_before,
        stock_after,
        watch_updates: shared.watch_updates.load(Ordering::Relaxed),
    }))
}

/// A line each second until `duration` has passed.
async fn progress(shared: &Shared, started: Instant, duration: Duration, quiet: bool) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let end = tokio::time::Instant::from_std(started + duration);
    let mut last = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => return,
            _ = tick.tick() => {}
        }
        if quiet {
            continue;
        }
        let stats = shared.stats.lock().await;
        let done: u64 = stats.outcomes.values().sum();
        let errors: u64 = stats.errors.values().sum();
        let confirmed = stats
            .outcomes
            .get(&Outcome::Confirmed)
            .copied()
            .unwrap_or(0);
        eprintln!(
            "[{:>4.0?}] {done} orders ({}/s now), {confirmed} confirmed, p50 {:.1} ms, p99 {:.1} ms, {errors} errors",
            started.elapsed(),
            done - last,
            stats.latency.value_at_quantile(0.5) as f64 / 1000.0,
            stats.latency.value_at_quantile(0.99) as f64 / 1000.0,
        );
        last = done;
    }
}

async fn closed_loop(shared: Arc<Shared>) {
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..shared.args.concurrency {
        let shared = shared.clone();
        workers.spawn(async move {
            while !shared.stop.load(Ordering::Relaxed) {
                let due = Instant::now();
                place_one(&shared, due).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// Most orders in flight at once in the open loop; an order due while this
/// many are outstanding is counted as an error ("DROPPED") and skipped.
const OPEN_LOOP_IN_FLIGHT: usize = 20_000;

async fn open_loop(shared: Arc<Shared>, rate: f64) {
    let period = Duration::from_secs_f64(1.0 / rate);
    let slots = Arc::new(Semaphore::new(OPEN_LOOP_IN_FLIGHT));
    let mut orders = tokio::task::JoinSet::new();
    let first = Instant::now();
    let mut n: u32 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let due = first + period * n;
        n += 1;
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            *shared
                .stats
                .lock()
                .await
                .errors
                .entry("DROPPED")
                .or_default() += 1;
            continue;
        };
        let shared = shared.clone();
        orders.spawn(async move {
            place_one(&shared, due).await;
            drop(slot);
        });
        while orders.try_join_next().is_some() {}
    }
    while orders.join_next().await.is_some() {}
}

/// Deadline of one PlaceOrder (the order service answers PENDING shortly
/// before it).
const PLACE_DEADLINE: Duration = Duration::from_secs(30);

/// Places one order (and perhaps cancels it), recording what happened.
async fn place_one(shared: &Shared, due: Instant) {
    let n = shared.next.fetch_add(1, Ordering::Relaxed);
    let customer = (n % shared.customers.len() as u64) as usize;
    let sku = &shared.skus[pick(n, 0x9e37_79b9, shared.skus.len())];
    let declined = fraction(n, 0x85eb_ca6b) < shared.args.decline_share;
    let request = order_pb::PlaceOrderRequest {
        lines: vec![order_pb::OrderLine {
            sku: sku.clone(),
            quantity: 1,
            unit_price: None,
        }],
        payment_method_token: if declined { "tok_declined" } else { "tok_visa" }.to_owned(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let token = &shared.customers[customer];
    let answer = shared
        .orders
        .clone()
        .place_order(authorized(request, token, PLACE_DEADLINE))
        .await;
    let latency = due.elapsed();
    let order = match answer {
        Ok(reply) => reply.into_inner().order,
        Err(status) => {
            let mut stats = shared.stats.lock().await;
            *stats.errors.entry(code_name(status.code())).or_default() += 1;
            return;
        }
    };
    let Some(order) = order else {
        *shared
            .stats
            .lock()
            .await
            .errors
            .entry("NO_ORDER")
            .or_default() += 1;
        return;
    };
    *shared.latest.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((order.order_id.clone(), customer));
    let mut outcome = outcome_of(&order);
    let mut cancel_took = None;
    if outcome == Outcome::Confirmed && fraction(n, 0xc2b2_ae35) < shared.args.cancel_share {
        let started = Instant::now();
        let request = order_pb::CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: "agora load".to_owned(),
        };
        match shared
            .orders
            .clone()
            .cancel_order(authorized(request, token, PLACE_DEADLINE))
            .await
        {
            Ok(reply) => {
                if let Some(order) = reply.into_inner().order {
                    outcome = outcome_of(&order);
                }
                cancel_took = Some(started.elapsed());
            }
            Err(status) => {
                let mut stats = shared.stats.lock().await;
                *stats.errors.entry(code_name(status.code())).or_default() += 1;
            }
        }
    }
    let mut stats = shared.stats.lock().await;
    stats.latency.saturating_record(micros(latency));
    if let Some(took) = cancel_took {
        stats.cancel_latency.saturating_record(micros(took));
    }
    *stats.outcomes.entry(outcome).or_default() += 1;
}

/// Follows the latest placed order with WatchOrder until its stream ends,
/// then the next one, until the run stops.
async fn watcher(shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let latest = shared
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some((order_id, customer)) = latest else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let request = order_pb::WatchOrderRequest { order_id };
        let token = &shared.customers[customer];
        let Ok(reply) = shared
            .orders
            .clone()
            .watch_order(authorized(request, token, Duration::from_secs(10)))
            .await
        else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut stream = reply.into_inner();
        while let Some(Ok(_)) = stream.next().await {
            shared.watch_updates.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn outcome_of(order: &order_pb::Order) -> Outcome {
    use order_pb::OrderState;
    match order.state() {
        OrderState::Confirmed => Outcome::Confirmed,
        OrderState::Failed => Outcome::Failed,
        OrderState::Cancelled => Outcome::Cancelled,
        OrderState::Pending | OrderState::Cancelling => Outcome::Pending,
        _ => Outcome::Other,
    }
}

/// A well-mixed choice among `n` for order number `i` (salted per use).
fn pick(i: u64, salt: u64, n: usize) -> usize {
    (mix(i ^ salt) % n as u64) as usize
}

/// A well-mixed number in [0, 1) for order number `i`.
fn fraction(i: u64, salt: u64) -> f64 {
    (mix(i ^ salt) >> 11) as f64 / (1u64 << 53) as f64
}

/// SplitMix64's finaliser.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// `message` with a bearer token and a deadline.
pub(crate) fn authorized<T>(message: T, token: &str, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The canonical name of a gRPC status code.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
