//! An in-process OTLP/gRPC trace collector, and the one global tracer
//! provider of a test binary exporting to it.
//!
//! The global provider is process-wide and test runtimes come and go, so the
//! collector and the exporter live on a runtime of their own, on a thread of
//! their own, for the life of the test binary. Tests tell their spans apart by
//! trace id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tonic::{Request, Response, Status};

/// A span as the collector received it, ids in lowercase hex.
#[derive(Clone, Debug)]
pub struct CollectedSpan {
    /// The resource's `service.name`.
    pub service_name: String,
    /// `package.Service/Method` for RPC spans.
    pub name: String,
    /// SERVER, CLIENT, ... (`opentelemetry.proto.trace.v1.Span.SpanKind`).
    pub kind: SpanKind,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// String and integer attributes, rendered as text.
    pub attributes: HashMap<String, String>,
    /// `opentelemetry.proto.trace.v1.Status.StatusCode` (0 unset, 2 error).
    pub status_code: i32,
}

/// The kinds of span the RPC layers make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
    Other,
}

/// The collector every test in this binary exports to.
#[derive(Clone, Debug, Default)]
pub struct Collector {
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
}

impl Collector {
    /// Every span received so far in the trace `trace_id` (hex).
    pub fn spans_of(&self, trace_id: &str) -> Vec<CollectedSpan> {
        self.spans
            .lock()
            .expect("spans lock")
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

/// Starts the collector and installs the exporting provider, once per test
/// binary; later calls return the same collector. Call it before building the
/// servers under test: their trace layers take the provider current then.
pub fn collector() -> &'static Collector {
    static COLLECTOR: OnceLock<Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let collector = Collector::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let served = collector.clone();
        std::thread::Builder::new()
            .name("otlp-collector".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("collector runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind collector");
                    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
                    let server = tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(served))
                        .serve_with_incoming(
                            tonic::transport::server::TcpIncoming::from(listener)
                                .with_nodelay(Some(true)),
                        );
                    let task = tokio::spawn(server);
                    agora_interceptors::telemetry::install_otlp(&endpoint)
                        .expect("install the OTLP exporter");
                    ready_tx.send(()).expect("signal ready");
                    let _ = task.await;
                });
            })
            .expect("collector thread");
        ready_rx.recv().expect("collector started");
        collector
    })
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service_name = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref())
                .and_then(|value| render(value.value.as_ref()?))
                .unwrap_or_default();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                received.push(CollectedSpan {
                    service_name: service_name.clone(),
                    kind: match span.kind {
                        2 => SpanKind::Server,
                        3 => SpanKind::Client,
                        _ => SpanKind::Other,
                    },
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .filter_map(|attribute| {
                            let value = render(attribute.value.as_ref()?.value.as_ref()?)?;
                            Some((attribute.key.clone(), value))
                        })
                        .collect(),
                    status_code: span.status.map_or(0, |status| status.code),
                });
            }
        }
        self.spans.lock().expect("spans lock").extend(received);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn render(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(text) => Some(text.clone()),
        Value::IntValue(number) => Some(number.to_string()),
        Value::BoolValue(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
