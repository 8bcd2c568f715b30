//! Prometheus metrics with go-grpc-prometheus's names and labels, so the
//! Grafana dashboards written for Go services work on Agora unchanged.
//!
//! - [`GrpcMetrics`]: the registry: `grpc_server_*` and `grpc_client_*`
//!   (`started_total`, `handled_total`, `handling_seconds`,
//!   `msg_received_total`, `msg_sent_total`), the database pool gauges, and
//!   whatever a service registers of its own ([`GrpcMetrics::register`]).
//! - [`MetricsLayer`] / [`ClientMetricsLayer`]: tower layers recording calls
//!   served and calls made.
//! - [`serve_metrics`]: the `GET /metrics` endpoint.
//! - [`methods`]: `grpc_type` of every known method, from the descriptor sets.

mod codes;
mod endpoint;
mod layer;
mod messages;
pub mod methods;
mod pool;
mod recorder;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::registry::Registry;

pub use endpoint::{CONTENT_TYPE, serve_metrics};
pub use layer::{ClientMetricsLayer, MetricsLayer, MetricsService};
pub use messages::count_request_messages;
pub use methods::{MethodInfo, MethodType};
pub use recorder::Call;

/// The name grpc-go gives a status code (`NotFound`, `Canceled`, …), as in
/// the `grpc_code` label.
pub use codes::name as go_code_name;

use crate::db::Database;
use pool::PoolCollector;
use recorder::{MethodTable, Side};

/// The metrics of one process. Cheap to clone; every clone records into and
/// reports the same registry.
#[derive(Clone)]
pub struct GrpcMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Locked to register a service's own metrics at start-up and to encode
    /// at each scrape; never on a call's path.
    registry: Mutex<Registry>,
    server: Arc<MethodTable>,
    client: Arc<MethodTable>,
    pool: PoolCollector,
}

impl std::fmt::Debug for GrpcMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcMetrics").finish_non_exhaustive()
    }
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcMetrics {
    /// Metrics knowing every method of Agora's contracts, health and reflection.
    ///
    /// # Panics
    /// If the descriptor sets compiled into the binary do not decode, which a
    /// unit test rules out.
    pub fn new() -> Self {
        let methods =
            methods::agora_methods().expect("the descriptor sets compiled into the binary decode");
        Self::with_methods(&methods)
    }

    /// Metrics knowing exactly `methods` (by `/pkg.Service/Method` path); any
    /// other path is recorded as service and method `unknown`.
    pub fn with_methods(methods: &HashMap<String, MethodInfo>) -> Self {
        let mut registry = Registry::default();
        let server = Arc::new(MethodTable::register(&mut registry, Side::Server, methods));
        let client = Arc::new(MethodTable::register(&mut registry, Side::Client, methods));
        let pool = PoolCollector::default();
        registry.register_collector(Box::new(pool.clone()));
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                server,
                client,
                pool,
            }),
        }
    }

    /// Reports `database`'s pool (`agora_db_pool_connections{state}`,
    /// `agora_db_pool_max_connections`) on every scrape from now on; replaces a
    /// database observed before.
    pub fn observe_database(&self, database: Database) {
        self.inner.pool.observe(database);
    }

    /// A layer recording calls made through a channel (`grpc_client_*`).
    pub fn client_layer(&self) -> ClientMetricsLayer {
        ClientMetricsLayer::new(self)
    }

    /// Reports `metric` as `name` (counters get `_total` appended) beside
    /// the gRPC metrics: a service's own measures of its business.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// Everything in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        let registry = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }

    fn server_table(&self) -> Arc<MethodTable> {
        self.inner.server.clone()
    }

    fn client_table(&self) -> Arc<MethodTable> {
        self.inner.client.clone()
    }
}
