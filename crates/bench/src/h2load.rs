//! Driving the load with h2load (Debian's `nghttp2-client`), which costs the
//! client side far less per call than a Rust client would, so one core of load
//! saturates one core of server.
//!
//! h2load does not read `grpc-status`; a call refused by the stack still looks
//! like a success to it. Every run therefore also checks the bytes of DATA it
//! received: a refused call has no message.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

/// What one h2load run reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// Calls answered with HTTP 2xx.
    pub succeeded: u64,
    /// Calls that failed at the HTTP level or timed out.
    pub failed: u64,
    /// Bytes of DATA received (messages and their 5-byte prefixes).
    pub data_bytes: u64,
    /// Wall-clock length of the run.
    pub elapsed: Duration,
}

/// How a run loads the server.
#[derive(Clone, Debug)]
pub struct Load<'a> {
    pub url: &'a str,
    pub frame: &'a Path,
    pub token: &'a str,
    pub connections: u32,
    pub streams: u32,
    pub duration: Duration,
    /// Calls per second per connection (open loop), or as fast as possible.
    pub rate_per_connection: Option<u32>,
    /// Where to write one line per call (start, status, microseconds).
    pub log_file: Option<&'a Path>,
    /// The CPU h2load is pinned to.
    pub cpu: u32,
}

/// Runs h2load once, pinned to `load.cpu`.
pub fn run(load: &Load<'_>) -> anyhow::Result<Report> {
    let mut command = Command::new("taskset");
    command
        .arg("-c")
        .arg(load.cpu.to_string())
        .arg("h2load")
        .arg(format!("--clients={}", load.connections))
        .arg(format!("--max-concurrent-streams={}", load.streams))
        .arg(format!("--duration={}", load.duration.as_secs().max(1)))
        .arg("--header=content-type: application/grpc")
        .arg("--header=te: trailers")
        .arg(format!("--header=authorization: Bearer {}", load.token))
        .arg(format!("--data={}", load.frame.display()));
    if let Some(rate) = load.rate_per_connection {
        command.arg(format!("--rps={rate}"));
    }
    if let Some(path) = load.log_file {
        command.arg(format!("--log-file={}", path.display()));
    }
    command.arg(load.url);
    let output = command
        .output()
        .context("running h2load (apt-get install nghttp2-client)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "h2load failed: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&text)
}

/// Reads the `finished in`, `requests:` and `traffic:` lines.
fn parse(text: &str) -> anyhow::Result<Report> {
    let mut report = Report::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("finished in ") {
            let seconds = rest.split(',').next().unwrap_or_default();
            report.elapsed = parse_duration(seconds.trim())?;
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            for part in rest.split(',') {
                let mut words = part.split_whitespace();
                let (Some(count), Some(what)) = (words.next(), words.next()) else {
                    continue;
                };
                let count: u64 = count.parse().unwrap_or(0);
                match what {
                    "succeeded" => report.succeeded = count,
                    "failed" | "errored" | "timeout" => report.failed += count,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("traffic: ") {
            // "... , 45.00MB (47185920) data"
            let data = rest
                .rsplit(',')
                .next()
                .and_then(|part| part.split('(').nth(1))
                .and_then(|part| part.split(')').next())
                .context("reading the data bytes of h2load's traffic line")?;
            report.data_bytes = data.trim().parse()?;
        }
    }
    anyhow::ensure!(report.succeeded > 0, "h2load completed no call:\n{text}");
    Ok(report)
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return Ok(Duration::from_secs_f64(ms.parse::<f64>()? / 1000.0));
    }
    let seconds = text.strip_suffix('s').context("a duration in s or ms")?;
    Ok(Duration::from_secs_f64(seconds.parse()?))
}

/// The 50th and 99th percentile of the per-call durations in an h2load log
/// file (third column, microseconds).
pub fn percentiles(log: &Path) -> anyhow::Result<(Duration, Duration)> {
    let text = std::fs::read_to_string(log)?;
    let mut micros: Vec<u64> = text
        .lines()
        .filter_map(|line| line.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    anyhow::ensure!(!micros.is_empty(), "no call in the h2load log");
    micros.sort_unstable();
    let at = |q: f64| {
        let index = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len()) - 1;
        Duration::from_micros(micros[index])
    };
    Ok((at(0.50), at(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2load_summary() {
        let text = "finished in 10.00s, 45678.90 req/s, 5.12MB/s\n\
            requests: 456789 total, 456789 started, 456789 done, 456780 succeeded, 9 failed, 0 errored, 0 timeout\n\
            status codes: 456780 2xx, 0 3xx, 0 4xx, 0 5xx\n\
            traffic: 51.23MB (53718291) total, 1.23MB (1289743) headers (space savings 95.00%), 45.00MB (47185920) data\n";
        let report = parse(text).unwrap();
        assert_eq!(report.succeeded, 456_780);
        assert_eq!(report.failed, 9);
        assert_eq!(report.data_bytes, 47_185_920);
        assert_eq!(report.elapsed, Duration::from_secs(10));
    }
}
