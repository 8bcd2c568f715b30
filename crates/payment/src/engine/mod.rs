//! Charges and refunds, exactly once, around a provider that may fail,
//! answer late, or lose its answer.
//!
//! The protocol for both:
//! 1. **Record first.** A new idempotency key becomes a PENDING row, written
//!    before the provider is called, together with a *lease*: the right to
//!    call the provider for that row until `lease_until`, fenced by an attempt
//!    counter.
//! 2. **Call the provider under the lease**, with the provider idempotency key
//!    derived from our id, so every attempt of one payment is the same
//!    instruction to the provider.
//! 3. **Record the answer** with a conditional update (still PENDING, same
//!    fence). A final answer resolves the row; a transient failure gives the
//!    lease back and the caller gets UNAVAILABLE.
//!
//! Whoever comes next with the same key (a retry, a concurrent duplicate, the
//! reconciler after a crash) finds the row: resolved → the answer; PENDING
//! with a live lease → waits for it; PENDING with a free or expired lease →
//! claims it and repeats step 2, which the provider answers with its first
//! answer if the first call got through. So there is one provider effect per
//! key, whatever fails where.
//!
//! Provider calls run in tasks of their own, so a caller that gives up (a
//! deadline, a dropped connection) does not cut an attempt in half: it
//! finishes and is recorded, and the caller's retry finds the result.
//!
//! **States.** Payment: `PENDING` → `CAPTURED` | `DECLINED` | `FAILED`;
//! `CAPTURED` → `PARTIALLY_REFUNDED` → … → `REFUNDED`. Each entry is a
//! `payment_transitions` row. Refund rows: `PENDING` → `SUCCEEDED` | `FAILED`.
//! A refund reserves its amount on the payment in the transaction that
//! records it (`refunded + reserved + amount <= amount_captured`), so
//! concurrent refunds cannot exceed the capture whatever order the provider
//! answers in; success moves the reservation into `refunded_minor`, a
//! rejection releases it, a transient failure keeps it until retried.
//!
//! **Answers the order saga relies on.** A decline is an OK answer with
//! `PAYMENT_STATE_DECLINED`; Charge never answers OK with PENDING. Same key,
//! different body → FAILED_PRECONDITION `IDEMPOTENCY_KEY_REUSED`; a second
//! order charge → `ORDER_ALREADY_PAID` (`ORDER_CHARGE_PENDING` while another
//! key's charge is PENDING); refunds: `PAYMENT_NOT_REFUNDABLE`,
//! `REFUND_EXCEEDS_CAPTURED`, `REFUND_REJECTED`.
//!
//! **Shutdown.** Attempts in flight get the rest of `AGORA_SHUTDOWN_GRACE`
//! to finish and be recorded, then stop; their rows stay PENDING for the
//! next retry or the reconciler.
//!
//! - `attempt`: the protocol's steps 2 and 3 and the "whoever comes next"
//!   part, written once for both: settling a recorded row, running an attempt
//!   in its own task, asking the provider within its timeout, the
//!   reconciler's walk.
//! - `charges` and `refunds`: the two use cases, and what each tells the
//!   shared machinery (how to read its row, build its provider call, record
//!   the answer).

mod attempt;
mod charges;
mod refunds;

use std::sync::Arc;
use std::time::Duration;

use agora_interceptors::api::time::now_micros;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{Payment, PaymentId};
use crate::error::PaymentError;
use crate::provider::PaymentProvider;
use crate::store::PaymentStore;

/// How many times a Charge or Refund retries recording its key after losing
/// an insert race to a row that then changed; each lost race means another
/// call made progress, so this is never reached in practice.
const MAX_INSERT_RACES: usize = 5;

/// Timings of the protocol.
#[derive(Clone, Copy, Debug)]
pub struct EngineSettings {
    /// Longest a provider call may take; a call that takes longer counts as a
    /// transient failure (its outcome unknown until the next attempt).
    pub provider_timeout: Duration,
}

impl EngineSettings {
    /// How long a lease lasts: twice the provider timeout, so a holder whose
    /// provider call timed out still has time to record the result before
    /// anyone else may take over. (Taking over early would still not charge
    /// twice, the provider key sees to that; it would only call again.)
    pub fn lease(&self) -> Duration {
        self.provider_timeout.saturating_mul(2)
    }

    /// When a lease taken at `now` (microseconds) runs out.
    fn lease_until(&self, now: i64) -> i64 {
        now + i64::try_from(self.lease().as_micros()).unwrap_or(i64::MAX / 2)
    }
}

/// What one reconciler pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Stale PENDING payments re-driven.
    pub payments: usize,
    /// Stale PENDING refunds re-driven.
    pub refunds: usize,
}

/// Charges and refunds over a store and a provider. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PaymentEngine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: PaymentStore,
    provider: Arc<dyn PaymentProvider>,
    settings: EngineSettings,
    /// Provider attempts in flight, so shutdown can wait for them.
    attempts: TaskTracker,
    /// Cancelled when the server dies or its drain runs out: attempts then
    /// stop where they are, exactly as in a crash (their rows stay PENDING).
    stop: CancellationToken,
    /// Bumped whenever a row is resolved or its lease released, to wake the
    /// callers of this process waiting on it.
    changed: watch::Sender<u64>,
}

impl PaymentEngine {
    /// An engine over `store` calling `provider`.
    pub fn new(
        store: PaymentStore,
        provider: Arc<dyn PaymentProvider>,
        settings: EngineSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                provider,
                settings,
                attempts: TaskTracker::new(),
                stop: CancellationToken::new(),
                changed: watch::Sender::new(0),
            }),
        }
    }

    /// The store, for reads.
    pub fn store(&self) -> &PaymentStore {
        &self.inner.store
    }

    /// The token that stops every attempt (cancelled on shutdown or crash).
    pub fn stop_token(&self) -> CancellationToken {
        self.inner.stop.clone()
    }

    /// Lets attempts in flight finish for up to `grace`, then stops the rest.
    pub async fn drain(&self, grace: Duration) {
        self.inner.attempts.close();
        if tokio::time::timeout(grace, self.inner.attempts.wait())
            .await
            .is_err()
        {
            tracing::warn!("provider attempts still running after the grace period; stopping them");
        }
        self.inner.stop.cancel();
    }

    /// A payment with its refunds and history.
    pub async fn payment(&self, id: PaymentId) -> Result<Payment, PaymentError> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| PaymentError::NotFound(id.to_string()))
    }

    /// A payment's row alone (no refunds, no history); NOT_FOUND when there
    /// is none.
    async fn payment_row(&self, id: PaymentId) -> Result<Payment, PaymentError> {
        self.inner
            .store
            .get_row(id)
            .await?
            .ok_or_else(|| PaymentError::NotFound(id.to_string()))
    }

    /// Re-drives every PENDING payment and refund whose lease expired and
    /// that nobody touched for `min_age`: the ones whose caller crashed, gave
    /// up, or was answered UNAVAILABLE and never came back. Each goes through
    /// the same claim → provider → record steps as a retry, with the same
    /// provider key, so a charge the provider already made is recorded, not
    /// repeated.
    pub async fn reconcile_once(&self, min_age: Duration) -> Result<ReconcileReport, PaymentError> {
        let now = now_micros();
        let untouched_since = now - i64::try_from(min_age.as_micros()).unwrap_or(i64::MAX / 2);
        Ok(ReconcileReport {
            payments: self
                .redrive_stale::<charges::PendingCharge>(now, untouched_since)
                .await?,
            refunds: self
                .redrive_stale::<refunds::PendingRefund>(now, untouched_since)
                .await?,
        })
    }
}
