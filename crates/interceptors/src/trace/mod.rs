//! Distributed tracing: one OpenTelemetry span per call served and per call
//! made, joined into one trace across services by W3C trace context.
//!
//! - [`TraceLayer`]: the server side. Continues the caller's trace from its
//!   `traceparent`/`tracestate` metadata (or starts one), opens a SERVER span
//!   named `package.Service/Method` with the RPC semantic conventions
//!   (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`) and
//!   makes it the current context while the handler runs, so every log line of
//!   the call names its trace ([`crate::log_ids`]).
//! - [`ClientTraceLayer`]: the client side. A CLIENT span, child of whatever
//!   is current (the call being served), injected into the outgoing metadata.
//!
//! Spans go to the global tracer provider that [`crate::telemetry::init`]
//! installs: exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
//! otherwise not recorded at all (ids are still made and propagated, so logs
//! and downstreams see one trace id). The OpenTelemetry API is used directly
//! rather than through `tracing-opentelemetry`, which costs several
//! microseconds per span; see BENCHMARKS.md.

mod layer;
mod propagation;
mod span;

pub use layer::{ClientTraceLayer, ClientTraceService, TraceLayer, TraceService};
pub use propagation::{extract, inject};
pub use span::RpcSpan;

/// The instrumentation scope name of Agora's spans.
pub const SCOPE: &str = "agora-interceptors";

/// The tracer of the global provider, for Agora's spans.
pub fn tracer() -> opentelemetry::global::BoxedTracer {
    opentelemetry::global::tracer(SCOPE)
}
