//! The machinery charges and refunds share, written once: bringing a recorded
//! row to an answer (return it, drive it, or wait for whoever drives it),
//! running one provider attempt in a task of its own, asking the provider
//! within its timeout, and the reconciler's walk over stale rows.
//!
//! A charge or a refund takes part through two small traits: [`LeasedRow`]
//! (how to read its row and build a provider call once its lease is claimed)
//! and [`ProviderCall`] (how to ask the provider and record the answer).

use std::future::Future;
use std::time::Duration;

use agora_interceptors::api::errors::error_chain;
use agora_interceptors::api::time::now_micros;
use agora_interceptors::client::{current_deadline, with_call_ids};
use tokio::sync::watch;
use tokio::time::Instant;

use super::PaymentEngine;
use crate::error::PaymentError;
use crate::provider::{PaymentProvider, ProviderError};
use crate::store::{LeasedId, PaymentStore};

/// How often a caller waiting on someone else's attempt re-reads the row when
/// no in-process notification arrives (another replica holds the lease, or
/// the lease is about to expire).
const WAIT_POLL: Duration = Duration::from_millis(50);

/// How many stale rows of each kind the reconciler takes on per pass.
const RECONCILE_BATCH: i64 = 100;

/// The fencing token of the lease a new row is recorded with.
const FIRST_FENCE: i64 = 1;

/// Where a recorded row stands, as [`LeasedRow::standing`] reads it.
pub(super) enum Standing<A> {
    /// The provider's answer is recorded; this is what the caller gets.
    Resolved(A),
    /// Still PENDING, its lease held until `lease_until` (in the past when
    /// the lease is free or expired).
    Pending {
        /// Microseconds since the epoch.
        lease_until: i64,
    },
}

/// A charge or refund row, as the shared machinery settles it.
pub(super) trait LeasedRow: Send + Sync + 'static {
    /// The row's id, which names its lease.
    type Id: LeasedId;
    /// What the caller gets once the row is resolved.
    type Answer: Send;
    /// The provider call made under the row's lease.
    type Call: ProviderCall<Id = Self::Id>;

    /// The row as the reconciler knows it: by id alone, with no caller.
    fn stale(id: Self::Id) -> Self;

    /// The row's id.
    fn id(&self) -> Self::Id;

    /// Reads the row: its answer once resolved (or the error that is its
    /// answer, such as a refund the provider refused), else its lease.
    fn standing(
        &self,
        engine: &PaymentEngine,
    ) -> impl Future<Output = Result<Standing<Self::Answer>, PaymentError>> + Send;

    /// Gathers what the provider call needs, once this process holds the
    /// row's lease.
    fn prepare(
        &self,
        engine: &PaymentEngine,
    ) -> impl Future<Output = Result<Self::Call, PaymentError>> + Send;
}

/// One provider call and the recording of its answer. Owned, so that it can
/// run in a task of its own.
pub(super) trait ProviderCall: Send + 'static {
    /// The id of the row whose lease the call is made under.
    type Id: LeasedId;
    /// The provider's final answer.
    type Outcome: Send;
    /// "charge" or "refund", for logs.
    const KIND: &'static str;

    /// The row's id.
    fn id(&self) -> Self::Id;

    /// Asks the provider (with the call's provider idempotency key).
    fn ask(
        &self,
        provider: &dyn PaymentProvider,
    ) -> impl Future<Output = Result<Self::Outcome, ProviderError>> + Send;

    /// Records the provider's final answer under lease `fence`, with a
    /// conditional update that changes nothing if the lease was lost (whoever
    /// took it over records the same answer, since the provider answers a key
    /// once).
    fn record(
        self,
        store: &PaymentStore,
        fence: i64,
        outcome: Self::Outcome,
        now: i64,
    ) -> impl Future<Output = Result<(), PaymentError>> + Send;
}

/// How one provider attempt ended.
#[derive(Debug)]
enum AttemptEnd {
    /// An answer was recorded (by this attempt, or by whoever took the lease
    /// over): re-read the row.
    Settled,
    /// The provider failed transiently or timed out; the lease was given back.
    ProviderUnavailable,
}

impl PaymentEngine {
    /// Brings a row recorded just now, whose insert took its lease with
    /// [`FIRST_FENCE`], to an answer: makes the first provider call, then
    /// settles it as anyone else would.
    pub(super) async fn drive_new<R: LeasedRow>(
        &self,
        row: R,
        call: R::Call,
    ) -> Result<R::Answer, PaymentError> {
        if let AttemptEnd::ProviderUnavailable = self.run_attempt(FIRST_FENCE, call).await? {
            return Err(PaymentError::ProviderUnavailable);
        }
        self.settle(&row).await
    }

    /// Brings a recorded row to an answer: returns it once resolved, drives
    /// it when its lease is free, waits while someone else holds it.
    /// PROVIDER_UNAVAILABLE when an attempt made here found the provider
    /// unavailable; CHARGE_IN_PROGRESS when the wait outlasts the caller's
    /// deadline.
    pub(super) async fn settle<R: LeasedRow>(&self, row: &R) -> Result<R::Answer, PaymentError> {
        let give_up_at = self.give_up_at();
        let mut changes = self.inner.changed.subscribe();
        loop {
            let lease_until = match row.standing(self).await? {
                Standing::Resolved(answer) => return Ok(answer),
                Standing::Pending { lease_until } => lease_until,
            };
            if lease_until < now_micros() {
                // Take it over, or (when someone else claimed it first) go
                // round again and wait for them.
                if let Some(AttemptEnd::ProviderUnavailable) =
                    self.take_over(row, "re-driving a pending row").await?
                {
                    return Err(PaymentError::ProviderUnavailable);
                }
                continue;
            }
            self.wait(&mut changes, give_up_at).await?;
        }
    }

    /// Re-drives up to [`RECONCILE_BATCH`] stale rows of one kind (PENDING,
    /// lease expired, untouched since `untouched_since`) exactly as a retry
    /// would, and says how many it drove. A row that fails is logged and left
    /// for a later pass; the walk goes on with the others.
    pub(super) async fn redrive_stale<R: LeasedRow>(
        &self,
        now: i64,
        untouched_since: i64,
    ) -> Result<usize, PaymentError> {
        let stale = self
            .inner
            .store
            .stale::<R::Id>(now, untouched_since, RECONCILE_BATCH)
            .await?;
        let mut driven = 0;
        for id in stale {
            if self.inner.stop.is_cancelled() {
                break;
            }
            let row = R::stale(id);
            match self
                .take_over(&row, "reconciler re-driving a stale pending row")
                .await
            {
                Ok(Some(_)) => driven += 1,
                // Someone else holds the lease: a retry got there first.
                Ok(None) => {}
                Err(error) => tracing::warn!(
                    kind = R::Call::KIND,
                    %id,
                    error = %error_chain(&error),
                    "reconciler could not re-drive a stale row; leaving it for a later pass"
                ),
            }
        }
        Ok(driven)
    }

    /// Claims the row's lease and, when that worked, makes one provider
    /// attempt under it; `None` when someone else holds the lease or the row
    /// is no longer PENDING. `why` says who is re-driving it, for the log.
    async fn take_over<R: LeasedRow>(
        &self,
        row: &R,
        why: &'static str,
    ) -> Result<Option<AttemptEnd>, PaymentError> {
        let id = row.id();
        let now = now_micros();
        let lease_until = self.inner.settings.lease_until(now);
        let Some(fence) = self.inner.store.claim(id, now, lease_until).await? else {
            return Ok(None);
        };
        tracing::info!(kind = R::Call::KIND, %id, attempt = fence, "{why}");
        let call = row.prepare(self).await?;
        self.run_attempt(fence, call).await.map(Some)
    }

    /// Runs one provider attempt under lease `fence` in a task of its own (so
    /// the caller going away does not cut it short) and waits for it.
    async fn run_attempt<C: ProviderCall>(
        &self,
        fence: i64,
        call: C,
    ) -> Result<AttemptEnd, PaymentError> {
        let engine = self.clone();
        let stop = self.inner.stop.clone();
        // The attempt's log lines carry the calling request's trace and
        // request ids, though it runs in a task of its own.
        let task = self.inner.attempts.spawn(with_call_ids(async move {
            tokio::select! {
                biased;
                () = stop.cancelled() => None,
                end = engine.attempt(fence, call) => Some(end),
            }
        }));
        match task.await {
            Ok(Some(end)) => end,
            // Stopped by shutdown, or the task panicked: the row stays PENDING
            // for the next retry or the reconciler.
            Ok(None) | Err(_) => Err(PaymentError::InProgress),
        }
    }

    /// Asks the provider, bounded by the provider timeout, and records the
    /// answer. A transient failure or a timeout gives the lease back: the
    /// outcome stays unknown until the next attempt asks again with the same
    /// provider key.
    async fn attempt<C: ProviderCall>(
        &self,
        fence: i64,
        call: C,
    ) -> Result<AttemptEnd, PaymentError> {
        let timeout = self.inner.settings.provider_timeout;
        let answer = tokio::time::timeout(timeout, call.ask(self.inner.provider.as_ref())).await;
        let id = call.id();
        let why = match answer {
            Ok(Ok(outcome)) => {
                call.record(&self.inner.store, fence, outcome, now_micros())
                    .await?;
                self.notify();
                return Ok(AttemptEnd::Settled);
            }
            Ok(Err(ProviderError::Unavailable(why))) => why,
            Err(_) => format!("no answer within {timeout:?}; outcome unknown until retried"),
        };
        tracing::warn!(kind = C::KIND, %id, attempt = fence, %why, "provider attempt failed transiently; lease given back");
        self.inner.store.release(id, fence, now_micros()).await?;
        self.notify();
        Ok(AttemptEnd::ProviderUnavailable)
    }

    // === waiting ===

    /// When a waiting caller stops waiting: its deadline, or one lease from
    /// now when it has none.
    fn give_up_at(&self) -> Instant {
        current_deadline().unwrap_or_else(|| Instant::now() + self.inner.settings.lease())
    }

    /// Waits for a change in this process or the next poll, whichever first;
    /// CHARGE_IN_PROGRESS once `give_up_at` has passed.
    async fn wait(
        &self,
        changes: &mut watch::Receiver<u64>,
        give_up_at: Instant,
    ) -> Result<(), PaymentError> {
        let now = Instant::now();
        if now >= give_up_at {
            return Err(PaymentError::InProgress);
        }
        let nap = WAIT_POLL.min(give_up_at - now);
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep(nap) => {}
        }
        Ok(())
    }

    /// Wakes this process's callers waiting on a row: one was resolved or
    /// its lease given back.
    fn notify(&self) {
        self.inner
            .changed
            .send_modify(|generation| *generation += 1);
    }
}
