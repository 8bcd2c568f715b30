//! Log lines that name their call: every event logged while a call is being
//! served carries the call's `trace_id` (from the current OpenTelemetry
//! context, which the trace layer sets) and `request_id` (from the call
//! context the deadline layer sets).
//!
//! The ids are added when a line is written, not by opening a `tracing` span
//! per call: a per-call span costs the formatting subscriber several
//! microseconds of field formatting and bookkeeping on every call, logged or
//! not (BENCHMARKS.md), while this costs nothing until something is logged.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Wraps an event format, adding the current call's ids to each line.
#[derive(Debug)]
pub struct WithCallIds<F> {
    inner: F,
    json: bool,
}

impl<F> WithCallIds<F> {
    /// `inner` writes the line; `json` says whether it writes a JSON object
    /// (ids become its first fields) or text (ids are appended).
    pub fn new(inner: F, json: bool) -> Self {
        Self { inner, json }
    }
}

/// The ids of the call being served on this task, if any.
fn call_ids() -> Option<(String, Option<String>)> {
    let context = opentelemetry::Context::current();
    let span = context.span();
    let span_context = span.span_context();
    let request_id = crate::client::current_request_id();
    if !span_context.is_valid() && request_id.is_none() {
        return None;
    }
    let trace_id = if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    };
    Some((trace_id, request_id))
}

impl<S, N, F> FormatEvent<S, N> for WithCallIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, request_id)) = call_ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        if self.json {
            let Some(rest) = line.strip_prefix('{') else {
                return writer.write_str(&line);
            };
            writer.write_char('{')?;
            if !trace_id.is_empty() {
                write!(writer, "\"trace_id\":\"{trace_id}\",")?;
            }
            if let Some(request_id) = request_id {
                write!(writer, "\"request_id\":{},", json_string(&request_id))?;
            }
            writer.write_str(rest)
        } else {
            let body = line.strip_suffix('\n').unwrap_or(&line);
            writer.write_str(body)?;
            if !trace_id.is_empty() {
                write!(writer, " trace_id={trace_id}")?;
            }
            if let Some(request_id) = request_id {
                write!(writer, " request_id={request_id}")?;
            }
            writer.write_char('\n')
        }
    }
}

fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn in_a_call(log: impl FnOnce()) {
        let span = SpanContext::new(
            TraceId::from_hex(TRACE).unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let _current = opentelemetry::Context::new()
            .with_remote_span_context(span)
            .attach();
        log();
    }

    #[test]
    fn json_lines_carry_the_trace_id_first() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .event_format(WithCallIds::new(
                tracing_subscriber::fmt::format().json().flatten_event(true),
                true,
            ))
            .with_writer(captured.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            in_a_call(|| tracing::info!(sku = "SKU-MUG", "reserved"));
            tracing::info!("outside any call");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines[0]["trace_id"], TRACE);
        assert_eq!(lines[0]["sku"], "SKU-MUG");
        assert!(lines[1].get("trace_id").is_none());
    }

    #[test]
    fn text_lines_end_with_the_trace_id() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(WithCallIds::new(tracing_subscriber::fmt::format(), false))
            .with_writer(captured.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            in_a_call(|| tracing::warn!("slow downstream"));
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.trim_end().ends_with(&format!("trace_id={TRACE}")),
            "{text}"
        );
        assert!(text.contains("slow downstream"));
    }
}
