//! The PlaceOrder saga: an orchestrated, durable, idempotent state machine.
//!
//! ```text
//!   reserve ──▶ charge ──▶ commit ──▶ done (CONFIRMED)
//!      │           │          │
//!      └───────────┴──────────┴──▶ release? ──▶ refund? ──▶ done (FAILED)
//!   CONFIRMED ──CancelOrder──▶ CANCELLING: release ──▶ refund ──▶ done (CANCELLED)
//! ```
//!
//! A step is undone only if the log says it may have taken effect
//! ([`StepLog::may_have_applied`](crate::steps::StepLog::may_have_applied)).
//! A refund that finds the payment still PENDING at the provider keeps
//! looking (the payment may yet be captured); after the retry budget the
//! order is shown FAILED while that settlement goes on in the background.
//!
//! [`Saga`] is also where the order use cases live, so the gRPC adapter only
//! parses, authorises, calls and converts:
//! - [`Saga::place`] (`place.rs`): PlaceOrder, from recording the order to
//!   answering it settled or, near the caller's deadline, PENDING.
//! - [`Saga::cancel`] (`cancel.rs`): CancelOrder.
//! - [`Saga::watch`] (`watch.rs`): WatchOrder's stream of versions.
//!
//! Inside:
//! - [`runner`]: drives one order, one recorded try at a time.
//! - `refund.rs`: which payments of an order to refund, by how much, under
//!   which key, and when its money is settled.
//! - [`Saga`] (here): starts runners, holds the recovery loop, waits for an
//!   order to settle (its runner says when), stops cleanly.
//!
//! The vocabulary (phases, steps, the log) is [`crate::steps`]; the saga
//! uses the store, the downstream calls and it, and none of them uses the
//! saga.
//!
//! **Durability.** The order and its saga state are recorded before any
//! remote call; each try of a step is recorded as STARTED before its call and
//! with its outcome after, before anything else happens. A forward step's
//! success and the next forward step's STARTED row are one transaction (one
//! commit instead of two, with the same guarantee: the next call is still
//! preceded by its durable STARTED row). A runner can therefore stop anywhere (crash, lost lease,
//! shutdown) and any process resumes the order from the database.
//!
//! **Recovery.** At start-up and every `recovery_interval`, orders with work
//! left whose lease is free or expired are leased and resumed, forward or
//! compensating, from their phase.

mod cancel;
mod place;
mod refund;
pub mod runner;
mod watch;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_interceptors::api::time::now_micros;
use agora_interceptors::client::{CallContext, current_deadline};
use opentelemetry::context::FutureExt as _;
use tokio::sync::watch as signal;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::domain::OrderId;
use crate::downstream::Downstreams;
use crate::error::OrderError;
use crate::steps::StepKind;
use crate::store::{OrderRecord, OrderStore};

pub use watch::{OrderWatch, WatchError};

/// How the saga retries, leases and recovers.
#[derive(Clone, Debug)]
pub struct SagaSettings {
    /// Tries of a forward step (reserve, charge, commit) before the saga
    /// gives up on it and compensates.
    pub step_attempts: u32,
    /// First backoff between tries; doubles each try.
    pub retry_base: Duration,
    /// Largest backoff between tries of a forward step.
    pub retry_max: Duration,
    /// Largest backoff between tries of a compensation step (those are
    /// retried until they succeed: money and stock must be given back).
    pub compensation_retry_max: Duration,
    /// Longest one remote call may take.
    pub attempt_timeout: Duration,
    /// How long a charge whose outcome is unknown keeps being asked about
    /// (with the same idempotency key) before the saga compensates.
    pub charge_resolve_within: Duration,
    /// How long a runner's lease on an order lasts past its next planned
    /// action; a runner silent for longer is presumed dead.
    pub lease_ttl: Duration,
    /// How often orphaned sagas are looked for.
    pub recovery_interval: Duration,
}

/// Where a runner may be stopped abruptly, for crash tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// The order is recorded; no step has been tried.
    Recorded,
    /// A try of the step is recorded STARTED; its call has not been made.
    BeforeCall(StepKind),
    /// The step's call has answered; the answer is not recorded.
    AfterCall(StepKind),
}

/// A test hook: answering true at a [`FaultPoint`] stops the runner there
/// without writing anything more, as a crash would (its lease stays until it
/// expires).
pub type FaultHook = Arc<dyn Fn(FaultPoint) -> bool + Send + Sync>;

/// A runner's heartbeat: every third of `lease_ttl`, extends `owner`'s lease
/// on `order` to `lease_ttl` from now. Returns once the lease is no longer
/// `owner`'s (taken over, or released as the saga ended).
async fn keep_lease(inner: Arc<Inner>, order: OrderId, owner: String) {
    let ttl = inner.settings.lease_ttl;
    loop {
        tokio::time::sleep(ttl / 3).await;
        let until = now_micros().saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        match inner.store.renew_lease(order, &owner, until).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => tracing::warn!(%error, "could not renew the saga lease; retrying"),
        }
    }
}

/// Starts and supervises saga runners. Cheap to clone.
#[derive(Clone)]
pub struct Saga {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Saga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saga")
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: OrderStore,
    downstreams: Downstreams,
    settings: SagaSettings,
    fault: Option<FaultHook>,
    metrics: Arc<crate::saga_metrics::SagaMetrics>,
    /// This process's name in lease owners, for operators reading the table.
    instance: String,
    /// Orders a runner of this process is driving.
    running: Mutex<HashSet<OrderId>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Saga {
    /// A saga engine over `store`, calling `downstreams`.
    pub fn new(
        store: OrderStore,
        downstreams: Downstreams,
        settings: SagaSettings,
        fault: Option<FaultHook>,
        metrics: Arc<crate::saga_metrics::SagaMetrics>,
    ) -> Self {
        let instance = format!("order-{}", uuid::Uuid::now_v7().simple());
        Self {
            inner: Arc::new(Inner {
                store,
                downstreams,
                settings,
                fault,
                metrics,
                instance,
                running: Mutex::new(HashSet::new()),
                tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// A fresh lease owner: this process plus a nonce, so two runners of one
    /// process never share a lease.
    fn new_lease_owner(&self) -> String {
        format!("{}/{}", self.inner.instance, uuid::Uuid::now_v7().simple())
    }

    /// When a lease taken now for a runner's first action ends (its
    /// heartbeat, [`keep_lease`], extends it while the runner lives).
    fn first_lease_until(&self) -> i64 {
        now_micros() + self.inner.settings.lease_ttl.as_micros() as i64
    }

    /// True once shutdown has begun.
    fn is_stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// Runs the saga of `order`, whose lease `owner` holds, on a runner of
    /// this process, or gives the lease up when none can start (this process
    /// already drives the order, or is shutting down), so that recovery
    /// resumes the order without waiting for the lease to expire. The
    /// receiver turns true once the runner has settled the order (CONFIRMED,
    /// FAILED, CANCELLED), and closes when the runner stops, for whatever
    /// reason.
    async fn drive_or_release(
        &self,
        order: OrderId,
        owner: String,
    ) -> Result<Option<signal::Receiver<bool>>, OrderError> {
        let runner = self.drive(order, owner.clone());
        if runner.is_none() {
            self.inner.store.release_lease(order, &owner).await?;
        }
        Ok(runner)
    }

    /// Runs the saga of `order`, whose lease `owner` holds, on its own task
    /// (it outlives the call that started it). `None` when this process
    /// already drives the order or is shutting down.
    fn drive(&self, order: OrderId, owner: String) -> Option<signal::Receiver<bool>> {
        if self.is_stopping() {
            return None;
        }
        {
            let mut running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            if !running.insert(order) {
                return None;
            }
        }
        let (settled_tx, settled_rx) = signal::channel(false);
        let inner = self.inner.clone();
        // The saga's downstream calls carry the starting call's request id
        // (and trace), but never its deadline: the saga outlives the call.
        let context = CallContext::new(
            tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600),
            Some(
                agora_interceptors::client::current_request_id()
                    .unwrap_or_else(agora_interceptors::client::new_request_id),
            ),
        );
        let span = tracing::info_span!("saga", order_id = %order);
        // The trace of the call that started the saga (PlaceOrder, CancelOrder)
        // goes on into every downstream call the saga makes, so one order is
        // one trace across order, inventory and payment.
        let trace = opentelemetry::Context::current();
        self.inner.tasks.spawn(
            context
                .scope(async move {
                    let _running = RunningGuard {
                        inner: inner.clone(),
                        order,
                    };
                    // The runner's heartbeat keeps its lease short-lived
                    // (so a crashed runner's order is resumed within
                    // seconds) however long a step waits. Should the lease
                    // be lost, the runner stops; its writes would be fenced
                    // off anyway.
                    tokio::select! {
                        () = runner::run(inner.clone(), order, owner.clone(), settled_tx) => {}
                        () = keep_lease(inner, order, owner) => {
                            tracing::warn!("saga lease lost; this runner stops");
                        }
                    }
                })
                .instrument(span)
                .with_context(trace),
        );
        Some(settled_rx)
    }

    /// Starts the recovery loop: now, then every `recovery_interval`, lease
    /// and resume every orphaned saga.
    pub fn start_recovery(&self) {
        let saga = self.clone();
        self.inner.tasks.spawn(async move {
            loop {
                if let Err(error) = saga.recover_once().await {
                    tracing::warn!(%error, "saga recovery pass failed; retrying later");
                }
                tokio::select! {
                    () = saga.inner.stop.cancelled() => return,
                    () = tokio::time::sleep(saga.inner.settings.recovery_interval) => {}
                }
            }
        });
    }

    /// One recovery pass. Returns how many sagas it resumed.
    pub async fn recover_once(&self) -> Result<usize, OrderError> {
        let mut resumed = 0;
        for order in self.inner.store.orphaned(100).await? {
            if self.is_stopping() {
                break;
            }
            let local = self
                .inner
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&order);
            if local {
                continue;
            }
            let owner = self.new_lease_owner();
            if self
                .inner
                .store
                .acquire_lease(order, &owner, self.first_lease_until())
                .await?
            {
                tracing::info!(order_id = %order, "resuming saga");
                if self.drive_or_release(order, owner).await?.is_some() {
                    resumed += 1;
                }
            }
        }
        Ok(resumed)
    }

    /// Waits until the runner the caller started (if any) has settled order
    /// `id` or stopped, but not past the served call's deadline less a margin
    /// to answer in: then the saga carries on in the background. Answers the
    /// order as it is then, read once. The runner itself says when it settles
    /// the order, so the wait is one wake-up, not one per change of every
    /// order in flight.
    async fn settled_or_deadline(
        &self,
        id: OrderId,
        runner: Option<signal::Receiver<bool>>,
    ) -> Result<OrderRecord, OrderError> {
        if let Some(mut settled) = runner {
            let now = Instant::now();
            let deadline = current_deadline().unwrap_or(now + Duration::from_secs(30));
            let left = deadline.saturating_duration_since(now);
            let margin = (left / 10).max(Duration::from_millis(50)).min(left);
            tokio::select! {
                // Settled, or the runner stopped (its sender dropped).
                _ = settled.wait_for(|settled| *settled) => {}
                () = tokio::time::sleep_until(deadline - margin) => {}
            }
        }
        self.inner.store.order(id).await
    }

    /// Begins shutdown: the recovery loop stops, runners pause at their next
    /// step boundary, watchers are told. Does not wait.
    pub fn begin_shutdown(&self) {
        self.inner.stop.cancel();
    }

    /// Stops the recovery loop and every runner at its next step boundary
    /// (each gives its lease up), waiting up to `grace`. Runners still busy
    /// after that are left to die with the process: their leases expire and
    /// another process resumes their orders.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(?grace, "saga runners still busy after the grace period");
        }
    }
}

/// Removes an order from the running set when its runner ends.
struct RunningGuard {
    inner: Arc<Inner>,
    order: OrderId,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.order);
    }
}
