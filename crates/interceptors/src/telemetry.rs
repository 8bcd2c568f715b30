//! Logging set-up: structured logs through `tracing`, filtered by `RUST_LOG`, with
//! the noisy transport crates (h2, hyper, tower) quiet unless asked for.

use tracing_subscriber::EnvFilter;

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured when a terminal is attached.
    #[default]
    Pretty,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The default filter when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,hyper_util=warn,tower=warn,sqlx=warn";

/// Installs the global subscriber. Safe to call more than once (later calls are
/// ignored), so tests and the suite launcher can both call it.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
