//! `agora-bench`: what Agora's serving stack costs, measured, not guessed.
//!
//! One run serves the same unary RPC with each stack ([`server::Stack`]), one
//! after the other, each in its own process pinned to one core with one
//! worker thread, loads it with h2load pinned to another core, and reports per
//! stack: throughput, server CPU per call, write system calls per reply,
//! p50/p99 latency at a fixed moderate rate, and memory, with ratios against
//! bare tonic. Method and figures: BENCHMARKS.md.
#![forbid(unsafe_code)]

mod h2load;
mod proc_stats;
mod server;
mod stub;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agora_interceptors::auth::{KeySet, SigningKey, TokenIssuer, TokenSettings};
use anyhow::Context as _;
use clap::Parser;
use prost::Message as _;

use proc_stats::Snapshot;
use server::Stack;

#[derive(Parser, Debug)]
#[command(
    name = "agora-bench",
    about = "Measures the cost of Agora's serving stack against bare tonic"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Measure every stack and print the report (the default).
    Run(RunArgs),
    /// Serve one stack (used by `run`, in a child process).
    Serve {
        #[arg(long, value_enum)]
        stack: Stack,
        /// The JWKS the full stack verifies tokens with.
        #[arg(long)]
        jwks: PathBuf,
    },
}

#[derive(clap::Args, Clone, Debug)]
struct RunArgs {
    /// Seconds of measured load per stack and round (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds; each round loads every stack once, in turn, so a drift of the
    /// machine (other tenants, frequency) hits every stack alike. The report
    /// gives each figure's median over the rounds.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// h2load connections for the throughput phase.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Concurrent streams per connection for the throughput phase.
    #[arg(long, default_value_t = 8)]
    streams: u32,
    /// Calls per second in the latency phase (open loop, over 4 connections).
    #[arg(long, default_value_t = 2000)]
    latency_rate: u32,
    /// The core the server runs on.
    #[arg(long, default_value_t = 1)]
    server_cpu: u32,
    /// The core h2load runs on.
    #[arg(long, default_value_t = 0)]
    load_cpu: u32,
    /// Stacks to measure (default: all, baseline first).
    #[arg(long, value_enum)]
    stack: Vec<Stack>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Sub::Serve { stack, jwks }) => server::run(stack, jwks),
        Some(Sub::Run(args)) => run(&args),
        None => run(&cli.run),
    }
}

/// What one stack measured.
#[derive(Debug)]
struct Measurement {
    stack: Stack,
    calls_per_second: f64,
    cpu_per_call: Duration,
    writes_per_reply: f64,
    p50: Duration,
    p99: Duration,
    rss_kib: u64,
    peak_rss_kib: u64,
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let key = SigningKey::generate("bench")?;
    let mut keys = KeySet::new();
    keys.insert(key.public_jwk())?;
    let jwks = work.path().join("jwks.json");
    std::fs::write(&jwks, keys.to_jwks_json())?;
    let token = TokenIssuer::new(&key, TokenSettings::default())?
        .issue("bench-caller", stub::CALLER_ROLE, Duration::from_secs(3600))?
        .token;
    let frame = work.path().join("frame.bin");
    std::fs::write(&frame, grpc_frame(&stub::request()))?;

    let stacks = if args.stack.is_empty() {
        Stack::ALL.to_vec()
    } else {
        args.stack.clone()
    };
    let mut servers = Vec::new();
    for stack in stacks {
        let (child, addr) = spawn_server(stack, args.server_cpu, &jwks)?;
        servers.push(Server { stack, child, addr });
    }
    let results = measure_all(&servers, args, &frame, &token, work.path());
    for server in &mut servers {
        stop(&mut server.child);
    }
    print_report(args, &results?);
    Ok(())
}

/// One stack's server process.
struct Server {
    stack: Stack,
    child: Child,
    addr: SocketAddr,
}

/// Rounds over every server in turn (throughput and CPU, then latency at a
/// fixed rate), then memory; each figure is the median over the rounds.
fn measure_all(
    servers: &[Server],
    args: &RunArgs,
    frame: &Path,
    token: &str,
    work: &Path,
) -> anyhow::Result<Vec<Measurement>> {
    let urls: Vec<String> = servers
        .iter()
        .map(|server| format!("http://{}{}", server.addr, stub::PATH))
        .collect();
    for server in servers {
        check_answers(server.addr, token)?;
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
    for round in 1..=args.rounds {
        for (index, server) in servers.iter().enumerate() {
            eprintln!("round {round}/{}: {}", args.rounds, server.stack.name());
            let mut load = h2load::Load {
                url: &urls[index],
                frame,
                token,
                connections: args.connections,
                streams: args.streams,
                duration: Duration::from_secs(1),
                rate_per_connection: None,
                log_file: None,
                cpu: args.load_cpu,
            };
            h2load::run(&load)?; // warm-up
            load.duration = Duration::from_secs(args.seconds);
            let pid = server.child.id();
            let before = Snapshot::take(pid)?;
            let report = h2load::run(&load)?;
            let used = Snapshot::take(pid)?.since(&before);
            ensure_answered(server.stack, &report)?;
            let calls = report.succeeded as f64;

            // Latency at a fixed, moderate rate (open loop): what a lone call
            // waits, where coalescing must not add delay.
            let log = work.join(format!("latency-{}-{round}.log", server.stack.name()));
            let latency_connections = 4;
            let latency = h2load::Load {
                url: &urls[index],
                frame,
                token,
                connections: latency_connections,
                streams: 1,
                duration: Duration::from_secs(args.seconds),
                rate_per_connection: Some(args.latency_rate / latency_connections),
                log_file: Some(&log),
                cpu: args.load_cpu,
            };
            let latency_report = h2load::run(&latency)?;
            ensure_answered(server.stack, &latency_report)?;
            let (p50, p99) = h2load::percentiles(&log)?;
            samples[index].push(Sample {
                calls_per_second: calls / report.elapsed.as_secs_f64(),
                cpu_per_call: used.cpu.as_secs_f64() / calls,
                writes_per_reply: used.write_syscalls as f64 / calls,
                p50: p50.as_secs_f64(),
                p99: p99.as_secs_f64(),
            });
        }
    }
    let mut results = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        let (rss_kib, peak_rss_kib) = proc_stats::memory_kib(server.child.id())?;
        let rounds = &samples[index];
        let median_of = |f: fn(&Sample) -> f64| median(rounds.iter().map(f));
        results.push(Measurement {
            stack: server.stack,
            calls_per_second: median_of(|s| s.calls_per_second),
            cpu_per_call: Duration::from_secs_f64(median_of(|s| s.cpu_per_call)),
            writes_per_reply: median_of(|s| s.writes_per_reply),
            p50: Duration::from_secs_f64(median_of(|s| s.p50)),
            p99: Duration::from_secs_f64(median_of(|s| s.p99)),
            rss_kib,
            peak_rss_kib,
        });
    }
    Ok(results)
}

/// What one stack measured in one round.
#[derive(Clone, Debug)]
struct Sample {
    calls_per_second: f64,
    cpu_per_call: f64,
    writes_per_reply: f64,
    p50: f64,
    p99: f64,
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Starts `agora-bench serve` pinned to `cpu` and waits for its address.
fn spawn_server(stack: Stack, cpu: u32, jwks: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(exe)
        .args(["serve", "--stack", stack.name(), "--jwks"])
        .arg(jwks)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the server (is taskset installed?)")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .with_context(|| format!("server said {line:?}"))?
        .parse()?;
    Ok((child, addr))
}

/// Makes one real gRPC call and checks the answer, so a stack that refuses
/// the calls (h2load cannot tell) is caught before it is measured.
fn check_answers(addr: SocketAddr, token: &str) -> anyhow::Result<()> {
    use agora_proto::user::v1::user_service_client::UserServiceClient;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut request = tonic::Request::new(stub::request());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let user = UserServiceClient::new(channel)
            .get_user(request)
            .await?
            .into_inner()
            .user
            .context("a user in the answer")?;
        anyhow::ensure!(user.user_id == stub::request().user_id, "wrong answer");
        Ok(())
    })
}

/// Every call h2load counted must have carried a message: a refused call is
/// trailers-only and has no DATA.
fn ensure_answered(stack: Stack, report: &h2load::Report) -> anyhow::Result<()> {
    let message = stub_reply_len() as u64 + 5;
    anyhow::ensure!(
        report.failed == 0 && report.data_bytes >= report.succeeded * message,
        "{}: {} calls failed or came back without a message ({} data bytes for {} calls)",
        stack.name(),
        report.failed,
        report.data_bytes,
        report.succeeded
    );
    Ok(())
}

fn stub_reply_len() -> usize {
    use agora_proto::user::v1 as pb;
    pb::GetUserResponse {
        user: Some(pb::User {
            user_id: stub::request().user_id,
            email: "ada@example.com".into(),
            display_name: "Ada Lovelace".into(),
            role: pb::Role::Customer as i32,
            ..Default::default()
        }),
    }
    .encoded_len()
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// A gRPC length-prefixed message: flag 0, big-endian length, bytes.
fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

fn print_report(args: &RunArgs, results: &[Measurement]) {
    let Some(base) = results
        .iter()
        .find(|m| m.stack == Stack::Tonic)
        .or(results.first())
    else {
        return;
    };
    println!(
        "\nUnary GetUser, servers on CPU {} (1 worker thread each), h2load on CPU {}: medians of {} rounds of {} s per stack at {} connections x {} streams, then {} s at {} calls/s over 4 connections for latency.\n",
        args.server_cpu,
        args.load_cpu,
        args.rounds,
        args.seconds,
        args.connections,
        args.streams,
        args.seconds,
        args.latency_rate
    );
    println!(
        "| stack | calls/s | CPU µs/call | writes/reply | p50 µs | p99 µs | RSS MiB (peak) | throughput × | CPU/call × | p99 × |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in results {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} | {} | {:.1} ({:.1}) | {:.3} | {:.3} | {:.2} |",
            m.stack.name(),
            m.calls_per_second,
            m.cpu_per_call.as_secs_f64() * 1e6,
            m.writes_per_reply,
            m.p50.as_micros(),
            m.p99.as_micros(),
            m.rss_kib as f64 / 1024.0,
            m.peak_rss_kib as f64 / 1024.0,
            m.calls_per_second / base.calls_per_second,
            m.cpu_per_call.as_secs_f64() / base.cpu_per_call.as_secs_f64(),
            m.p99.as_secs_f64() / base.p99.as_secs_f64(),
        );
    }
}
