//! One span per RPC, with the OpenTelemetry semantic conventions for gRPC.

use opentelemetry::trace::{
    SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tonic::Code;

use crate::observe::Outcome;

/// The span of one call, served or made. Ends when told the call's code, or as
/// CANCELLED when dropped before (the caller went away).
#[derive(Debug)]
pub struct RpcSpan {
    context: Context,
    kind: SpanKind,
    finished: bool,
}

impl RpcSpan {
    /// A SERVER span for a call to `path` (`/package.Service/Method`), child of
    /// the caller's context `parent` (empty when the caller sent none).
    pub fn server<T: Tracer>(tracer: &T, path: &str, parent: &Context) -> Self
    where
        T::Span: Send + Sync + 'static,
    {
        Self::start(tracer, path, SpanKind::Server, parent)
    }

    /// A CLIENT span for a call to `path` made while `parent` is current.
    pub fn client<T: Tracer>(tracer: &T, path: &str, parent: &Context) -> Self
    where
        T::Span: Send + Sync + 'static,
    {
        Self::start(tracer, path, SpanKind::Client, parent)
    }

    fn start<T: Tracer>(tracer: &T, path: &str, kind: SpanKind, parent: &Context) -> Self
    where
        T::Span: Send + Sync + 'static,
    {
        if !crate::telemetry::is_exporting() {
            return Self::unrecorded(kind, parent);
        }
        let name = match path.strip_prefix('/') {
            Some(name) if name.contains('/') => name.to_owned(),
            _ => "unknown".to_owned(),
        };
        let builder = tracer.span_builder(name).with_kind(kind.clone());
        let span = tracer.build_with_context(builder, parent);
        let context = parent.with_span(span);
        let this = Self {
            context,
            kind,
            finished: false,
        };
        // Attributes only for spans that are kept: an unsampled span skips
        // the allocations.
        let span = this.context.span();
        if span.is_recording() {
            let (service, method) = split_path(path);
            span.set_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", method.to_owned()),
            ]);
        }
        this
    }

    /// The context with this span current: the parent of anything the call
    /// does, downstream calls included.
    /// Ids only, when nothing records spans: the caller's trace id (or a new
    /// one) and a new span id, made current and passed downstream exactly as
    /// an unsampled SDK span's would be, without building one (a tracer, a
    /// sampler call and two allocations per call).
    fn unrecorded(kind: SpanKind, parent: &Context) -> Self {
        let ids = RandomIdGenerator::default();
        let parent_span = parent.span();
        let inherited = parent_span.span_context();
        let (trace_id, state) = if inherited.is_valid() {
            (inherited.trace_id(), inherited.trace_state().clone())
        } else {
            (ids.new_trace_id(), TraceState::default())
        };
        let span_context = SpanContext::new(
            trace_id,
            ids.new_span_id(),
            TraceFlags::default(),
            false,
            state,
        );
        Self {
            context: parent.with_remote_span_context(span_context),
            kind,
            finished: false,
        }
    }

    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The trace this span belongs to.
    pub fn trace_id(&self) -> TraceId {
        self.context.span().span_context().trace_id()
    }

    /// Whether `code` marks the span as failed. For a server only the codes
    /// that mean the server failed do (OpenTelemetry's gRPC conventions); a
    /// caller's mistake is not the server's error. For a client any non-OK does.
    fn is_error(&self, code: Code) -> bool {
        match self.kind {
            SpanKind::Server => matches!(
                code,
                Code::Unknown
                    | Code::DeadlineExceeded
                    | Code::Unimplemented
                    | Code::Internal
                    | Code::Unavailable
                    | Code::DataLoss
            ),
            _ => code != Code::Ok,
        }
    }
}

impl Outcome for RpcSpan {
    fn finish(&mut self, code: Code) {
        if self.finished {
            return;
        }
        self.finished = true;
        let span = self.context.span();
        if span.is_recording() {
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
            if self.is_error(code) {
                span.set_status(Status::error(code.description()));
            }
        }
        span.end();
    }
}

impl Drop for RpcSpan {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// `("package.Service", "Method")` of `/package.Service/Method`.
fn split_path(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("unknown", "unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/agora.user.v1.UserService/GetUser"),
            ("agora.user.v1.UserService", "GetUser")
        );
        assert_eq!(split_path("/nonsense"), ("unknown", "unknown"));
    }

    #[test]
    fn an_unrecorded_span_continues_the_callers_trace_with_a_new_span_id() {
        let parent_context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "value")]).unwrap(),
        );
        let parent = Context::new().with_remote_span_context(parent_context.clone());
        let span = RpcSpan::unrecorded(SpanKind::Server, &parent);
        let own = span.context().span().span_context().clone();
        assert_eq!(own.trace_id(), parent_context.trace_id());
        assert_ne!(own.span_id(), parent_context.span_id());
        assert!(own.is_valid());
        assert_eq!(own.trace_state().get("vendor"), Some("value"));
        assert!(!span.context().span().is_recording());
    }

    #[test]
    fn an_unrecorded_span_without_a_caller_starts_a_trace() {
        let first = RpcSpan::unrecorded(SpanKind::Server, &Context::new());
        let second = RpcSpan::unrecorded(SpanKind::Server, &Context::new());
        assert!(first.context().span().span_context().is_valid());
        assert_ne!(first.trace_id(), second.trace_id());
    }
}
