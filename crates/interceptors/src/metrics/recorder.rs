//! The metric families of one side (server or client) and the per-method
//! handles the hot path increments.
//!
//! Label sets are built once per method; a call looks its path up in a map
//! built at start-up and bumps handles that are created on the method's first
//! call (so methods never called add no series) and reused afterwards.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::Code;

use super::codes;
use super::methods::MethodInfo;

/// go-grpc-prometheus's default latency buckets, in seconds (Prometheus's
/// `DefBuckets`), so dashboards' `le` values match.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Labels of `*_started_total` and `*_handling_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
}

/// Labels of `*_handled_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Which end of a call is measured; names the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Calls this process serves: `grpc_server_*`.
    Server,
    /// Calls this process makes: `grpc_client_*`.
    Client,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

/// The metric families of one side.
#[derive(Debug)]
struct Families {
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Messages the caller sent: received on a server, sent by a client.
    request_messages: Family<MethodLabels, Counter>,
    /// Messages the server sent: sent by a server, received by a client.
    response_messages: Family<MethodLabels, Counter>,
}

impl Families {
    fn register(registry: &mut Registry, side: Side) -> Self {
        let families = Self {
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            request_messages: Family::default(),
            response_messages: Family::default(),
        };
        let name = side.name();
        // prometheus-client appends `_total` to counters itself.
        registry.register(
            format!("grpc_{name}_started"),
            format!("Total number of RPCs started on the {name}"),
            families.started.clone(),
        );
        registry.register(
            format!("grpc_{name}_handled"),
            format!(
                "Total number of RPCs completed on the {name}, regardless of success or failure"
            ),
            families.handled.clone(),
        );
        registry.register(
            format!("grpc_{name}_handling_seconds"),
            format!(
                "Histogram of response latency (seconds) of gRPC calls completed by the {name}"
            ),
            families.handling.clone(),
        );
        // go-grpc-prometheus's names and help texts, word for word.
        let (request_name, request_help, response_name, response_help) = match side {
            Side::Server => (
                "grpc_server_msg_received",
                "Total number of RPC stream messages received on the server",
                "grpc_server_msg_sent",
                "Total number of gRPC stream messages sent by the server",
            ),
            Side::Client => (
                "grpc_client_msg_sent",
                "Total number of gRPC stream messages sent by the client",
                "grpc_client_msg_received",
                "Total number of RPC stream messages received by the client",
            ),
        };
        registry.register(
            request_name,
            request_help,
            families.request_messages.clone(),
        );
        registry.register(
            response_name,
            response_help,
            families.response_messages.clone(),
        );
        families
    }
}

/// The metric handles of one method, created on first use.
#[derive(Debug)]
pub struct MethodHandles {
    labels: MethodLabels,
    families: Arc<Families>,
    started: OnceLock<Counter>,
    handling: OnceLock<Histogram>,
    handled: [OnceLock<Counter>; codes::COUNT],
    request_messages: OnceLock<Counter>,
    response_messages: OnceLock<Counter>,
}

impl MethodHandles {
    fn new(info: &MethodInfo, families: Arc<Families>) -> Self {
        Self {
            labels: MethodLabels {
                grpc_type: info.kind.as_str(),
                grpc_service: info.service.clone(),
                grpc_method: info.method.clone(),
            },
            families,
            started: OnceLock::new(),
            handling: OnceLock::new(),
            handled: std::array::from_fn(|_| OnceLock::new()),
            request_messages: OnceLock::new(),
            response_messages: OnceLock::new(),
        }
    }

    fn request_messages(&self) -> &Counter {
        self.request_messages.get_or_init(|| {
            self.families
                .request_messages
                .get_or_create_owned(&self.labels)
        })
    }

    fn response_messages(&self) -> &Counter {
        self.response_messages.get_or_init(|| {
            self.families
                .response_messages
                .get_or_create_owned(&self.labels)
        })
    }

    fn record_started(&self) {
        self.started
            .get_or_init(|| self.families.started.get_or_create_owned(&self.labels))
            .inc();
    }

    fn record_handled(&self, code: Code, elapsed: Duration) {
        self.handled[codes::index(code)]
            .get_or_init(|| {
                self.families.handled.get_or_create_owned(&HandledLabels {
                    grpc_type: self.labels.grpc_type,
                    grpc_service: self.labels.grpc_service.clone(),
                    grpc_method: self.labels.grpc_method.clone(),
                    grpc_code: codes::name(code),
                })
            })
            .inc();
        self.handling
            .get_or_init(|| self.families.handling.get_or_create_owned(&self.labels))
            .observe(elapsed.as_secs_f64());
    }
}

/// Every known method of one side by path, plus the one `unknown` entry.
#[derive(Debug)]
pub struct MethodTable {
    /// foldhash: looked up by path on every call.
    by_path: HashMap<Box<str>, Arc<MethodHandles>, foldhash::fast::RandomState>,
    unknown: Arc<MethodHandles>,
}

impl MethodTable {
    /// Registers `side`'s families in `registry` and prepares handles for `methods`.
    pub fn register(
        registry: &mut Registry,
        side: Side,
        methods: &HashMap<String, MethodInfo>,
    ) -> Self {
        let families = Arc::new(Families::register(registry, side));
        let by_path = methods
            .iter()
            .map(|(path, info)| {
                let handles = Arc::new(MethodHandles::new(info, families.clone()));
                (Box::from(path.as_str()), handles)
            })
            .collect();
        let unknown = Arc::new(MethodHandles::new(&MethodInfo::unknown(), families));
        Self { by_path, unknown }
    }

    /// The same handles, knowing only the methods of `services`: a server
    /// records a path it does not serve as `unknown`, like any other.
    pub fn only_services(&self, services: &[&str]) -> Self {
        let by_path = self
            .by_path
            .iter()
            .filter(|(_, handles)| services.contains(&handles.labels.grpc_service.as_str()))
            .map(|(path, handles)| (path.clone(), handles.clone()))
            .collect();
        Self {
            by_path,
            unknown: self.unknown.clone(),
        }
    }

    /// Starts measuring a call to `path`.
    pub fn start(&self, path: &str) -> Call {
        let method = self.by_path.get(path).unwrap_or(&self.unknown).clone();
        method.record_started();
        Call {
            method,
            started: Instant::now(),
            finished: false,
        }
    }
}

/// One call in flight. Records its outcome exactly once: by [`Call::finish`],
/// or as `Canceled` when dropped unfinished (the caller went away).
#[derive(Debug)]
pub struct Call {
    method: Arc<MethodHandles>,
    started: Instant,
    finished: bool,
}

impl Call {
    /// The counter of the messages the caller sends in this call, for the
    /// request body to count into ([`super::count_request_messages`]).
    pub fn request_messages(&self) -> Counter {
        self.method.request_messages().clone()
    }

    /// Records `count` more messages sent back to the caller.
    pub fn response_messages(&self, count: u64) {
        self.method.response_messages().inc_by(count);
    }

    /// Records that the call ended with `code`; later calls are ignored.
    pub fn finish(&mut self, code: Code) {
        if !self.finished {
            self.finished = true;
            self.method.record_handled(code, self.started.elapsed());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}
