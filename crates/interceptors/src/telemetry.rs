//! Logs and traces for a process.
//!
//! - Logs: structured through `tracing`, pretty or JSON, filtered by
//!   `RUST_LOG`, with the noisy transport crates (h2, hyper, tower) quiet unless
//!   asked for. Every line logged during a call carries the call's `trace_id`
//!   and `request_id` ([`crate::log_ids`]).
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans are exported over
//!   OTLP/gRPC through a batch processor; the service name is
//!   `OTEL_SERVICE_NAME`, else the executable's name, and the standard
//!   `OTEL_TRACES_SAMPLER*` and `OTEL_BSP_*` variables apply. When it is unset
//!   nothing is recorded or exported: spans are never sampled, but trace ids
//!   are still made and propagated, so logs and downstream calls share them.
//! - One `service.name` per service: the spans of a [`crate::ServiceHost`]
//!   (and the downstream calls it makes) go through a tracer provider of its
//!   own whose resource names the service ([`host_tracer`]), so the suite,
//!   four services in one process, shows as four services in a trace UI, with
//!   the names the standalone binaries have (`agora-user`, …).
//!   `OTEL_SERVICE_NAME`, when set, names every span of the process instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;

use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_subscriber::EnvFilter;

use crate::log_ids::WithCallIds;

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
pub const DEFAULT_FILTER: &str =
    "info,h2=warn,hyper=warn,hyper_util=warn,tower=warn,sqlx=warn,opentelemetry=warn";

/// Spans queued for export before new ones are dropped. The SDK's 2048 drops
/// spans under a burst of a few thousand calls a second; `OTEL_BSP_MAX_QUEUE_SIZE`
/// overrides this.
const EXPORT_QUEUE: usize = 16_384;

/// The provider installed by [`init`] or [`install_otlp`], kept to flush it.
static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

/// Where spans go and the runtime their exporters' connections run on, kept
/// to build each host's provider like the process's one.
static EXPORT: Mutex<Option<(String, tokio::runtime::Handle)>> = Mutex::new(None);

/// The provider of each service name, made on first use.
static HOST_PROVIDERS: Mutex<Option<HashMap<String, SdkTracerProvider>>> = Mutex::new(None);

/// Whether spans are exported (an OTLP provider is installed).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported. When not, the trace layers skip building SDK
/// spans (nothing would record them) and only make and pass on the ids.
pub fn is_exporting() -> bool {
    EXPORTING.load(Ordering::Acquire)
}

/// Installs the global log subscriber and tracer provider. Safe to call more
/// than once (later calls change nothing), so tests and the suite launcher
/// can both call it. Must run inside a Tokio runtime when exporting.
pub fn init(format: LogFormat) {
    init_with_filter(format, DEFAULT_FILTER);
}

/// [`init`] with another log filter for when `RUST_LOG` is unset (a CLI
/// command that wants its own output uncluttered, say).
pub fn init_with_filter(format: LogFormat, default_filter: &str) {
    init_logs(format, default_filter);
    if PROVIDER.lock().expect("provider lock").is_some() {
        return;
    }
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .ok()
        .filter(|endpoint| !endpoint.is_empty());
    match endpoint {
        Some(endpoint) => {
            if let Err(error) = install_otlp(&endpoint) {
                tracing::error!(%endpoint, "traces will not be exported: {error:#}");
                install(unexported_provider());
            } else {
                tracing::info!(%endpoint, "exporting traces over OTLP/gRPC");
            }
        }
        None => install(unexported_provider()),
    }
}

fn init_logs(format: LogFormat, default_filter: &str) {
    // Standard error, like grpc-go's logger: standard output stays for what
    // a command prints (`TOKEN=$(agora token)` must capture the token only).
    install_logs(format, default_filter, std::io::stderr);
}

/// Writes this process's logs as JSON lines, exactly as `AGORA_LOG_FORMAT=json`
/// does (call ids included), into `writer` instead of standard error: for
/// tests that read the lines an operator's pipeline gets. False when a log
/// subscriber was installed before.
pub fn json_logs_into<W>(writer: W) -> bool
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    install_logs(LogFormat::Json, DEFAULT_FILTER, writer)
}

fn install_logs<W>(format: LogFormat, default_filter: &str, writer: W) -> bool
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Pretty => {
            // Colours only on a terminal, for the message and its fields alike.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder
                .with_ansi(ansi)
                .event_format(WithCallIds::new(
                    tracing_subscriber::fmt::format().with_ansi(ansi),
                    false,
                ))
                .try_init()
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .event_format(WithCallIds::new(
                tracing_subscriber::fmt::format().json().flatten_event(true),
                true,
            ))
            .try_init(),
    }
    .is_ok()
}

/// Exports every span (subject to `OTEL_TRACES_SAMPLER`) to the OTLP/gRPC
/// collector at `endpoint` (`http://host:4317`), replacing any provider
/// installed before. Must run inside a Tokio runtime (the exporter is a tonic
/// client).
pub fn install_otlp(endpoint: &str) -> anyhow::Result<()> {
    install(exporting_provider(endpoint, resource())?);
    *EXPORT.lock().expect("export lock") =
        Some((endpoint.to_owned(), tokio::runtime::Handle::current()));
    EXPORTING.store(true, Ordering::Release);
    Ok(())
}

fn exporting_provider(endpoint: &str, resource: Resource) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch_config())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// The `service.name` of a host serving `grpc_service` (its first service):
/// `agora-<context>` for `agora.<context>.v1.…`, the binaries' names;
/// any other service's full name as it is.
pub fn service_name_of(grpc_service: &str) -> String {
    match grpc_service.split('.').collect::<Vec<_>>().as_slice() {
        ["agora", context, _version, _service] => format!("agora-{context}"),
        _ => grpc_service.to_owned(),
    }
}

/// The tracer of the service named `service_name`: spans exported with that
/// `service.name`. The process's tracer when nothing is exported (no span is
/// recorded then) or when `OTEL_SERVICE_NAME` names every span.
pub fn host_tracer(service_name: &str) -> BoxedTracer {
    let export = EXPORT.lock().expect("export lock").clone();
    let Some((endpoint, runtime)) =
        export.filter(|_| is_exporting() && std::env::var_os("OTEL_SERVICE_NAME").is_none())
    else {
        return crate::trace::tracer();
    };
    let mut providers = HOST_PROVIDERS.lock().expect("providers lock");
    let providers = providers.get_or_insert_with(HashMap::new);
    if !providers.contains_key(service_name) {
        // On the runtime the process's exporter runs on, which lives as long
        // as exporting does (a test's runtime may not).
        let _entered = runtime.enter();
        let resource = Resource::builder()
            .with_service_name(service_name.to_owned())
            .build();
        match exporting_provider(&endpoint, resource) {
            Ok(provider) => {
                providers.insert(service_name.to_owned(), provider);
            }
            Err(error) => {
                tracing::error!(
                    service = service_name,
                    "spans keep the process's service name: {error:#}"
                );
                return crate::trace::tracer();
            }
        }
    }
    BoxedTracer::new(Box::new(
        providers[service_name].tracer(crate::trace::SCOPE),
    ))
}

/// Waits until every span ended so far has been handed to the exporter.
/// Runs on the blocking pool: the SDK's flush blocks its thread until the
/// exporter, which needs the runtime, is done.
pub async fn flush_traces() {
    let mut providers: Vec<SdkTracerProvider> = PROVIDER
        .lock()
        .expect("provider lock")
        .iter()
        .cloned()
        .collect();
    if let Some(hosts) = HOST_PROVIDERS.lock().expect("providers lock").as_ref() {
        providers.extend(hosts.values().cloned());
    }
    for provider in providers {
        let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "flushing traces failed");
        }
    }
}

/// A provider that samples nothing: ids are made and propagated, nothing is
/// recorded. Costs a few hundred nanoseconds a call.
fn unexported_provider() -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOff)
        .with_resource(resource())
        .build()
}

fn install(provider: SdkTracerProvider) {
    opentelemetry::global::set_tracer_provider(provider.clone());
    *PROVIDER.lock().expect("provider lock") = Some(provider);
}

fn batch_config() -> opentelemetry_sdk::trace::BatchConfig {
    let builder = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_some() {
        builder.build()
    } else {
        builder.with_max_queue_size(EXPORT_QUEUE).build()
    }
}

fn resource() -> Resource {
    let builder = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        return builder.build();
    }
    let name = std::env::current_exe()
        .ok()
        .and_then(|path| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "agora".to_owned());
    builder.with_service_name(name).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agora_services_are_named_like_their_binaries() {
        assert_eq!(service_name_of("agora.user.v1.UserService"), "agora-user");
        assert_eq!(
            service_name_of("agora.inventory.v1.InventoryService"),
            "agora-inventory"
        );
        assert_eq!(
            service_name_of("grpc.health.v1.Health"),
            "grpc.health.v1.Health"
        );
    }
}
