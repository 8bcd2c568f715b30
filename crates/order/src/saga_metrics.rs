//! What an operator watches of the PlaceOrder saga, on the order service's
//! `/metrics` beside the gRPC metrics:
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `agora_orders_settled_total` | counter | `state`, `reason` | orders that reached CONFIRMED, FAILED or CANCELLED; `reason` is the failure reason (`none` when confirmed) |
//! | `agora_saga_step_duration_seconds` | histogram | `step`, `outcome` | one try of a step, from its STARTED row to its SUCCEEDED or FAILED row |
//! | `agora_saga_compensations_total` | counter | `step` | compensations done (`REFUND_PAYMENT`, `RELEASE_STOCK`) |
//! | `agora_orders_unsettled` | gauge | | orders whose saga still has work left a minute after they were placed |
//!
//! The saga tells [`SagaMetrics::record`] every change it commits; the
//! gauge is read from the database by [`SagaMetrics::watch_unsettled`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use agora_interceptors::api::time::now_micros;
use agora_interceptors::db::Database;
use agora_interceptors::metrics::GrpcMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio_util::sync::CancellationToken;

use crate::store::{OrderRecord, Transition};

/// An order still unsettled this long after it was placed is counted by
/// `agora_orders_unsettled` (a healthy saga settles in well under a second;
/// retries of an unavailable downstream take tens of seconds).
pub const UNSETTLED_AFTER: Duration = Duration::from_secs(60);

/// How often the unsettled orders are counted.
const UNSETTLED_REFRESH: Duration = Duration::from_secs(5);

/// Tries whose start is remembered at most (a runner that crashed between
/// STARTED and its outcome leaves one behind; past this they are forgotten).
const OPEN_TRIES_MAX: usize = 10_000;

/// Step latencies, in seconds: calls take milliseconds, retried or slow
/// downstreams seconds.
const STEP_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettledLabels {
    state: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CompensationLabels {
    step: String,
}

/// The saga's metrics of one order service.
#[derive(Debug)]
pub struct SagaMetrics {
    settled: Family<SettledLabels, Counter>,
    step_seconds: Family<StepLabels, Histogram, fn() -> Histogram>,
    compensations: Family<CompensationLabels, Counter>,
    unsettled: Gauge,
    /// When each open try (order, step, attempt) was recorded STARTED.
    open_tries: Mutex<HashMap<(String, &'static str, i32), Instant>>,
}

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

impl SagaMetrics {
    /// Registers the saga's metrics with the service's.
    pub fn register(metrics: &GrpcMetrics) -> Arc<Self> {
        let this = Arc::new(Self {
            settled: Family::default(),
            step_seconds: Family::new_with_constructor(step_histogram as fn() -> Histogram),
            compensations: Family::default(),
            unsettled: Gauge::default(),
            open_tries: Mutex::new(HashMap::new()),
        });
        metrics.register(
            "agora_orders_settled",
            "Orders that reached a final state (CONFIRMED, FAILED, CANCELLED), by state and failure reason",
            this.settled.clone(),
        );
        metrics.register(
            "agora_saga_step_duration_seconds",
            "Time of one try of a saga step, from STARTED to SUCCEEDED or FAILED",
            this.step_seconds.clone(),
        );
        metrics.register(
            "agora_saga_compensations",
            "Compensation steps done (REFUND_PAYMENT, RELEASE_STOCK)",
            this.compensations.clone(),
        );
        metrics.register(
            "agora_orders_unsettled",
            "Orders whose saga still has work left a minute after they were placed",
            this.unsettled.clone(),
        );
        this
    }

    /// Records what committing `change` to `order` means for the metrics.
    pub fn record(&self, order: &OrderRecord, change: &Transition) {
        let id = order.id.to_string();
        for step in &change.steps {
            let kind = step.step.as_str();
            let key = (id.clone(), kind, step.attempt);
            let mut open = self
                .open_tries
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match step.status.as_str() {
                "STARTED" => {
                    if open.len() >= OPEN_TRIES_MAX {
                        open.clear();
                    }
                    open.insert(key, Instant::now());
                }
                outcome => {
                    if let Some(started) = open.remove(&key) {
                        self.step_seconds
                            .get_or_create(&StepLabels {
                                step: kind.to_owned(),
                                outcome: outcome.to_owned(),
                            })
                            .observe(started.elapsed().as_secs_f64());
                    }
                    if outcome == "SUCCEEDED" && matches!(kind, "REFUND_PAYMENT" | "RELEASE_STOCK")
                    {
                        self.compensations
                            .get_or_create(&CompensationLabels {
                                step: kind.to_owned(),
                            })
                            .inc();
                    }
                }
            }
        }
        if let Some(state) = change.state.map(|state| state.as_str())
            && matches!(state, "CONFIRMED" | "FAILED" | "CANCELLED")
        {
            let reason = change
                .failure
                .as_ref()
                .map_or(order.failure_reason.as_str(), |(reason, _)| reason.as_str());
            let reason = if reason.is_empty() { "none" } else { reason };
            self.settled
                .get_or_create(&SettledLabels {
                    state: state.to_owned(),
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }

    /// Keeps `agora_orders_unsettled` current until `stop`: counts, every few
    /// seconds, the orders with saga work left (`phase <> 'done'`, the rows
    /// recovery resumes) placed more than [`UNSETTLED_AFTER`] ago.
    pub async fn watch_unsettled(self: Arc<Self>, database: Database, stop: CancellationToken) {
        loop {
            let placed_before = now_micros() - UNSETTLED_AFTER.as_micros() as i64;
            let counted: Result<i64, sqlx::Error> = sqlx::query_scalar(
                "SELECT COUNT(*) FROM orders WHERE phase <> 'done' AND created_at < $1",
            )
            .bind(placed_before)
            .fetch_one(database.pool())
            .await;
            match counted {
                Ok(count) => {
                    self.unsettled.set(count);
                }
                Err(error) => tracing::debug!(%error, "counting unsettled orders failed"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(UNSETTLED_REFRESH) => {}
            }
        }
    }
}
