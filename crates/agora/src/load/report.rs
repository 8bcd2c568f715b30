//! The load run's report: what was measured, as a table for people and as
//! JSON for machines, and the scrape of the services' write counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::procfs::Process;
use super::setup::Stock;
use super::{LoadArgs, Outcome, Stats};

/// The counter every service reports for its database writes.
const WRITES_METRIC: &str = "agora_db_write_transactions_total";

/// Everything the report is made from.
pub(super) struct Inputs<'a> {
    pub(super) args: &'a LoadArgs,
    pub(super) elapsed: Duration,
    pub(super) stats: &'a Stats,
    pub(super) processes: &'a [Process],
    pub(super) cpu_before: &'a [Option<u64>],
    pub(super) cpu_after: &'a [Option<u64>],
    pub(super) writes_before: &'a BTreeMap<&'static str, u64>,
    pub(super) writes_after: &'a BTreeMap<&'static str, u64>,
    pub(super) stock_before: Stock,
    pub(super) stock_after: Stock,
    pub(super) watch_updates: u64,
}

/// A finished run's figures.
#[derive(Clone, Debug)]
pub struct Report {
    /// The whole report, as `--json` prints it.
    pub json: Value,
}

impl Report {
    pub(super) fn new(inputs: Inputs<'_>) -> Self {
        let Inputs {
            args,
            elapsed,
            stats,
            processes,
            cpu_before,
            cpu_after,
            writes_before,
            writes_after,
            stock_before,
            stock_after,
            watch_updates,
        } = inputs;
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let orders: u64 = stats.outcomes.values().sum();
        let count = |outcome: Outcome| stats.outcomes.get(&outcome).copied().unwrap_or(0);
        let by_state: serde_json::Map<String, Value> = [
            Outcome::Confirmed,
            Outcome::Failed,
            Outcome::Cancelled,
            Outcome::Pending,
            Outcome::Other,
        ]
        .into_iter()
        .map(|outcome| {
            let n = count(outcome);
            (
                outcome.label().to_owned(),
                json!({"count": n, "per_second": round(n as f64 / seconds, 1)}),
            )
        })
        .collect();
        let per_order = |x: f64| {
            if orders == 0 {
                Value::Null
            } else {
                json!(round(x / orders as f64, 3))
            }
        };
        let processes: Vec<Value> = processes
            .iter()
            .zip(cpu_before.iter().zip(cpu_after))
            .map(|(process, (before, after))| {
                let cpu_ms = match (before, after) {
                    (Some(before), Some(after)) => Some(after.saturating_sub(*before)),
                    _ => None,
                };
                json!({
                    "process": process.label,
                    "pid": process.pid,
                    "cpu_ms": cpu_ms,
                    "cpu_ms_per_order": cpu_ms.map(|ms| per_order(ms as f64)),
                    "cores_busy": cpu_ms.map(|ms| round(ms as f64 / 1000.0 / seconds, 2)),
                    "peak_rss_mib": process.peak_rss_kib().map(|kib| round(kib as f64 / 1024.0, 1)),
                })
            })
            .collect();
        let mut writes = serde_json::Map::new();
        let mut total_writes = 0;
        for (service, after) in writes_after {
            let delta = after.saturating_sub(writes_before.get(service).copied().unwrap_or(0));
            total_writes += delta;
            writes.insert((*service).to_owned(), per_order(delta as f64));
        }
        if !writes.is_empty() {
            writes.insert("total".to_owned(), per_order(total_writes as f64));
        }
        let json = json!({
            "mode": match args.rate {
                Some(rate) => json!({"open_loop_rate": rate}),
                None => json!({"closed_loop_concurrency": args.concurrency}),
            },
            "skus": if args.hot_sku { 1 } else { args.skus },
            "hot_sku": args.hot_sku,
            "decline_share": args.decline_share,
            "cancel_share": args.cancel_share,
            "watchers": args.watchers,
            "customers": args.customers,
            "seconds": round(seconds, 3),
            "orders": orders,
            "orders_per_second": round(orders as f64 / seconds, 1),
            "by_state": by_state,
            "latency_ms": latency(&stats.latency),
            "cancel_latency_ms": latency(&stats.cancel_latency),
            "errors": stats.errors,
            "processes": processes,
            "write_transactions_per_order": writes,
            "watch_updates": watch_updates,
            "stock": {
                "available_before": stock_before.available,
                "available_after": stock_after.available,
                "on_hand_before": stock_before.on_hand,
                "on_hand_after": stock_after.on_hand,
                "reserved_after": stock_after.reserved,
                "oversold": stock_after.available < 0 || stock_after.on_hand < 0,
            },
        });
        Self { json }
    }

    /// The report for people.
    pub fn table(&self) -> String {
        let j = &self.json;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{} orders in {:.1} s: {:.1} orders/s",
            j["orders"],
            j["seconds"].as_f64().unwrap_or(0.0),
            j["orders_per_second"].as_f64().unwrap_or(0.0)
        );
        let _ = writeln!(out, "\n  final state      count    per s");
        if let Some(states) = j["by_state"].as_object() {
            for (state, figures) in states {
                if figures["count"].as_u64() == Some(0) && state != "confirmed" {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "  {state:<12} {:>9} {:>8.1}",
                    figures["count"].to_string(),
                    figures["per_second"].as_f64().unwrap_or(0.0)
                );
            }
        }
        let l = &j["latency_ms"];
        let _ = writeln!(
            out,
            "\n  PlaceOrder latency (ms): p50 {}  p90 {}  p99 {}  max {}",
            l["p50"], l["p90"], l["p99"], l["max"]
        );
        if j["cancel_latency_ms"]["count"].as_u64().unwrap_or(0) > 0 {
            let c = &j["cancel_latency_ms"];
            let _ = writeln!(
                out,
                "  CancelOrder latency (ms): p50 {}  p99 {}  max {}",
                c["p50"], c["p99"], c["max"]
            );
        }
        match j["errors"].as_object() {
            Some(errors) if !errors.is_empty() => {
                let _ = writeln!(out, "\n  errors by gRPC code:");
                for (code, n) in errors {
                    let _ = writeln!(out, "    {code:<22} {n}");
                }
            }
            _ => {
                let _ = writeln!(out, "\n  errors: none");
            }
        }
        if let Some(processes) = j["processes"].as_array()
            && !processes.is_empty()
        {
            let _ = writeln!(
                out,
                "\n  {:<38} {:>8} {:>12} {:>11} {:>13}",
                "process", "pid", "CPU ms/order", "cores busy", "peak RSS MiB"
            );
            for p in processes {
                let _ = writeln!(
                    out,
                    "  {:<38} {:>8} {:>12} {:>11} {:>13}",
                    p["process"].as_str().unwrap_or_default(),
                    p["pid"].to_string(),
                    p["cpu_ms_per_order"].to_string(),
                    p["cores_busy"].to_string(),
                    p["peak_rss_mib"].to_string()
                );
            }
        }
        if let Some(writes) = j["write_transactions_per_order"].as_object()
            && !writes.is_empty()
        {
            let line: Vec<String> = writes.iter().map(|(s, n)| format!("{s} {n}")).collect();
            let _ = writeln!(out, "\n  write transactions per order: {}", line.join(", "));
        }
        let s = &j["stock"];
        let _ = writeln!(
            out,
            "\n  stock: {} available before, {} after, {} reserved; oversold: {}",
            s["available_before"], s["available_after"], s["reserved_after"], s["oversold"]
        );
        out
    }
}

fn latency(histogram: &Histogram<u64>) -> Value {
    let ms = |micros: u64| round(micros as f64 / 1000.0, 2);
    json!({
        "count": histogram.len(),
        "p50": ms(histogram.value_at_quantile(0.50)),
        "p90": ms(histogram.value_at_quantile(0.90)),
        "p99": ms(histogram.value_at_quantile(0.99)),
        "max": ms(histogram.max()),
        "mean": round(histogram.mean() / 1000.0, 2),
    })
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Each service's `agora_db_write_transactions_total`, where its metrics
/// endpoint answers.
pub(super) async fn scrape_writes(
    metrics: &BTreeMap<&'static str, SocketAddr>,
) -> BTreeMap<&'static str, u64> {
    let mut writes = BTreeMap::new();
    for (service, addr) in metrics {
        let scraped = tokio::time::timeout(Duration::from_secs(5), scrape(*addr)).await;
        if let Ok(Some(text)) = scraped
            && let Some(value) = text.lines().find_map(|line| {
                let rest = line.strip_prefix(WRITES_METRIC)?;
                rest.split_whitespace().next()?.parse::<f64>().ok()
            })
        {
            writes.insert(*service, value as u64);
        }
    }
    writes
}

/// GET /metrics over a plain HTTP/1.1 connection, closed after the answer.
async fn scrape(addr: SocketAddr) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}
