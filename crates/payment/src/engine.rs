//! Charges and refunds, exactly once, around a provider that may fail,
//! answer late, or lose its answer.
//!
//! The protocol for both (see ARCHITECTURE.md, "payment"):
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

use std::sync::Arc;
use std::time::Duration;

use agora_interceptors::api::time::now_micros;
use agora_interceptors::client::{current_deadline, with_call_ids};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{
    ChargeCommand, Payment, PaymentId, PaymentMethodToken, PaymentState, Refund, RefundCommand,
    RefundId, RefundState,
};
use crate::error::PaymentError;
use crate::provider::{
    ChargeInstruction, ChargeOutcome, PaymentProvider, ProviderError, RefundInstruction,
    RefundOutcome,
};
use crate::store::{ChargeResolution, InsertPaymentError, InsertRefundError, PaymentStore};

/// How often a caller waiting on someone else's attempt re-reads the row when
/// no in-process notification arrives (another replica holds the lease, or
/// the lease is about to expire).
const WAIT_POLL: Duration = Duration::from_millis(50);

/// How many times a Charge or Refund retries recording its key after losing
/// an insert race to a row that then changed; each lost race means another
/// call made progress, so this is never reached in practice.
const MAX_INSERT_RACES: usize = 5;

/// How many stale rows the reconciler takes on per pass.
const RECONCILE_BATCH: i64 = 100;

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

    fn lease_micros(&self) -> i64 {
        i64::try_from(self.lease().as_micros()).unwrap_or(i64::MAX / 2)
    }
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

    // === charges ===

    /// Charges once per idempotency key. Returns the payment once the charge
    /// has an answer (CAPTURED, DECLINED, FAILED, or a later refund state);
    /// UNAVAILABLE while the provider cannot answer.
    pub async fn charge(&self, command: ChargeCommand) -> Result<Payment, PaymentError> {
        let store = &self.inner.store;
        let fingerprint = command.fingerprint();
        for _ in 0..MAX_INSERT_RACES {
            if let Some(existing) = store.find_by_key(command.idempotency_key.as_str()).await? {
                if existing.request_fingerprint != fingerprint {
                    return Err(PaymentError::KeyReused {
                        key: command.idempotency_key.as_str().to_owned(),
                    });
                }
                return self.settle_charge(existing.id, Some(command.token)).await;
            }

            let id = PaymentId::new();
            let now = now_micros();
            let lease_until = now + self.inner.settings.lease_micros();
            match store.insert_pending(id, &command, lease_until, now).await {
                Ok(()) => {
                    tracing::info!(payment_id = %id, order_id = %command.order_id, "charge recorded");
                    let instruction = ChargeInstruction {
                        idempotency_key: ChargeInstruction::key_for(id),
                        payment_id: id,
                        amount: command.amount,
                        payment_method_token: command.token.clone(),
                    };
                    // The insert gave us the lease with fence 1.
                    if let AttemptEnd::ProviderUnavailable =
                        self.run_charge_attempt(1, instruction).await?
                    {
                        return Err(PaymentError::ProviderUnavailable);
                    }
                    return self.settle_charge(id, Some(command.token)).await;
                }
                Err(InsertPaymentError::Db(error)) => return Err(error),
                Err(InsertPaymentError::Conflict) => {
                    // Either the key was recorded concurrently (the next turn
                    // finds it) or the order already has a live payment.
                    if store
                        .find_by_key(command.idempotency_key.as_str())
                        .await?
                        .is_some()
                    {
                        continue;
                    }
                    if let Some(live) = store.live_for_order(command.order_id).await? {
                        let order_id = command.order_id.to_string();
                        let payment_id = live.id.to_string();
                        return Err(if live.state == PaymentState::Pending {
                            PaymentError::OrderChargePending {
                                order_id,
                                payment_id,
                            }
                        } else {
                            PaymentError::OrderAlreadyPaid {
                                order_id,
                                payment_id,
                            }
                        });
                    }
                    // The conflicting payment was declined meanwhile: try again.
                }
            }
        }
        Err(PaymentError::InProgress)
    }

    /// Brings a recorded payment to an answer: returns it when resolved,
    /// drives it when its lease is free, waits while someone else holds it.
    /// `token` is the caller's (a retry carries it); without one the token
    /// kept on the PENDING row is used.
    async fn settle_charge(
        &self,
        id: PaymentId,
        token: Option<PaymentMethodToken>,
    ) -> Result<Payment, PaymentError> {
        let store = &self.inner.store;
        let give_up_at = self.give_up_at();
        let mut changes = self.inner.changed.subscribe();
        loop {
            let payment = store
                .get_row(id)
                .await?
                .ok_or_else(|| PaymentError::NotFound(id.to_string()))?;
            if payment.state.is_resolved() {
                return self.payment(id).await;
            }
            let now = now_micros();
            if payment.lease_until < now {
                let lease_until = now + self.inner.settings.lease_micros();
                if let Some(fence) = store.claim(id, now, lease_until).await? {
                    let token = match &token {
                        Some(token) => token.clone(),
                        None => self.stored_token(id).await?,
                    };
                    tracing::info!(payment_id = %id, attempt = fence, "re-driving a pending charge");
                    let instruction = ChargeInstruction {
                        idempotency_key: ChargeInstruction::key_for(id),
                        payment_id: id,
                        amount: payment.amount,
                        payment_method_token: token,
                    };
                    match self.run_charge_attempt(fence, instruction).await? {
                        AttemptEnd::Settled => continue,
                        AttemptEnd::ProviderUnavailable => {
                            return Err(PaymentError::ProviderUnavailable);
                        }
                    }
                }
                // Someone else claimed it first: wait for them.
                continue;
            }
            self.wait(&mut changes, give_up_at).await?;
        }
    }

    async fn stored_token(&self, id: PaymentId) -> Result<PaymentMethodToken, PaymentError> {
        self.inner
            .store
            .pending_token(id)
            .await?
            .map(PaymentMethodToken::from_stored)
            .ok_or_else(|| {
                PaymentError::from(anyhow::anyhow!(
                    "pending payment {id} has no payment-method token to charge"
                ))
            })
    }

    /// Runs one charge attempt in its own task (so the caller going away
    /// does not cut it short) and waits for it.
    async fn run_charge_attempt(
        &self,
        fence: i64,
        instruction: ChargeInstruction,
    ) -> Result<AttemptEnd, PaymentError> {
        let engine = self.clone();
        let stop = self.inner.stop.clone();
        let task = self.inner.attempts.spawn(with_call_ids(async move {
            tokio::select! {
                biased;
                () = stop.cancelled() => None,
                end = engine.charge_attempt(fence, instruction) => Some(end),
            }
        }));
        match task.await {
            Ok(Some(end)) => end,
            // Stopped by shutdown, or the task panicked: the row stays PENDING
            // for the next retry or the reconciler.
            Ok(None) | Err(_) => Err(PaymentError::InProgress),
        }
    }

    async fn charge_attempt(
        &self,
        fence: i64,
        instruction: ChargeInstruction,
    ) -> Result<AttemptEnd, PaymentError> {
        let id = instruction.payment_id;
        let answer = tokio::time::timeout(
            self.inner.settings.provider_timeout,
            self.inner.provider.charge(&instruction),
        )
        .await;
        let resolution = match answer {
            Ok(Ok(ChargeOutcome::Approved { provider_reference })) => ChargeResolution {
                state: PaymentState::Captured,
                reason: String::new(),
                provider_reference,
            },
            Ok(Ok(ChargeOutcome::Declined {
                reason,
                provider_reference,
            })) => ChargeResolution {
                state: PaymentState::Declined,
                reason,
                provider_reference,
            },
            Ok(Ok(ChargeOutcome::Rejected { reason })) => ChargeResolution {
                state: PaymentState::Failed,
                reason,
                provider_reference: String::new(),
            },
            Ok(Err(ProviderError::Unavailable(why))) => {
                tracing::warn!(payment_id = %id, attempt = fence, %why, "charge attempt failed transiently");
                self.inner.store.release(id, fence, now_micros()).await?;
                self.notify();
                return Ok(AttemptEnd::ProviderUnavailable);
            }
            Err(_) => {
                tracing::warn!(payment_id = %id, attempt = fence, "charge attempt timed out; outcome unknown until retried");
                self.inner.store.release(id, fence, now_micros()).await?;
                self.notify();
                return Ok(AttemptEnd::ProviderUnavailable);
            }
        };
        let recorded = self
            .inner
            .store
            .resolve(id, fence, &resolution, now_micros())
            .await?;
        if recorded {
            tracing::info!(payment_id = %id, state = %resolution.state, reason = %resolution.reason, "charge resolved");
        } else {
            tracing::info!(payment_id = %id, attempt = fence, "lease lost before recording; the new holder records the same answer");
        }
        self.notify();
        Ok(AttemptEnd::Settled)
    }

    // === refunds ===

    /// Refunds once per idempotency key, never beyond what was captured.
    pub async fn refund(&self, command: RefundCommand) -> Result<(Payment, Refund), PaymentError> {
        let store = &self.inner.store;
        let fingerprint = command.fingerprint();
        for _ in 0..MAX_INSERT_RACES {
            if let Some(existing) = store
                .find_refund_by_key(command.idempotency_key.as_str())
                .await?
            {
                if existing.request_fingerprint != fingerprint {
                    return Err(PaymentError::KeyReused {
                        key: command.idempotency_key.as_str().to_owned(),
                    });
                }
                return self.settle_refund(existing.id).await;
            }

            let payment = store
                .get_row(command.payment_id)
                .await?
                .ok_or_else(|| PaymentError::NotFound(command.payment_id.to_string()))?;
            if payment.amount.currency != command.amount.currency {
                return Err(PaymentError::CurrencyMismatch {
                    expected: payment.amount.currency.to_string(),
                });
            }
            refundable(&payment, command.amount.amount.get())?;

            let id = RefundId::new();
            let now = now_micros();
            let lease_until = now + self.inner.settings.lease_micros();
            match store.insert_refund(id, &command, lease_until, now).await {
                Ok(()) => {
                    tracing::info!(refund_id = %id, payment_id = %payment.id, amount = command.amount.amount.get(), "refund recorded");
                    let refund = store.get_refund(id).await?.ok_or_else(|| {
                        PaymentError::from(anyhow::anyhow!("refund {id} vanished"))
                    })?;
                    if let AttemptEnd::ProviderUnavailable = self
                        .run_refund_attempt(1, refund, payment.provider_reference)
                        .await?
                    {
                        return Err(PaymentError::ProviderUnavailable);
                    }
                    return self.settle_refund(id).await;
                }
                Err(InsertRefundError::Db(error)) => return Err(error),
                Err(InsertRefundError::KeyTaken) => continue,
                Err(InsertRefundError::NotReservable) => {
                    // Refunded or reserved concurrently: say why with fresh numbers.
                    let payment = store
                        .get_row(command.payment_id)
                        .await?
                        .ok_or_else(|| PaymentError::NotFound(command.payment_id.to_string()))?;
                    refundable(&payment, command.amount.amount.get())?;
                    // Refundable again (a concurrent refund failed): try again.
                }
            }
        }
        Err(PaymentError::InProgress)
    }

    /// Brings a recorded refund to an answer, as [`Self::settle_charge`].
    async fn settle_refund(&self, id: RefundId) -> Result<(Payment, Refund), PaymentError> {
        let store = &self.inner.store;
        let give_up_at = self.give_up_at();
        let mut changes = self.inner.changed.subscribe();
        loop {
            let refund = store
                .get_refund(id)
                .await?
                .ok_or_else(|| PaymentError::from(anyhow::anyhow!("refund {id} vanished")))?;
            match refund.state {
                RefundState::Succeeded => {
                    return Ok((self.payment(refund.payment_id).await?, refund));
                }
                RefundState::Failed => {
                    return Err(PaymentError::RefundRejected {
                        reason: refund.failure_reason,
                    });
                }
                RefundState::Pending => {}
            }
            let now = now_micros();
            if refund.lease_until < now {
                let lease_until = now + self.inner.settings.lease_micros();
                if let Some(fence) = store.claim_refund(id, now, lease_until).await? {
                    tracing::info!(refund_id = %id, attempt = fence, "re-driving a pending refund");
                    let payment = store
                        .get_row(refund.payment_id)
                        .await?
                        .ok_or_else(|| PaymentError::NotFound(refund.payment_id.to_string()))?;
                    match self
                        .run_refund_attempt(fence, refund, payment.provider_reference)
                        .await?
                    {
                        AttemptEnd::Settled => continue,
                        AttemptEnd::ProviderUnavailable => {
                            return Err(PaymentError::ProviderUnavailable);
                        }
                    }
                }
                continue;
            }
            self.wait(&mut changes, give_up_at).await?;
        }
    }

    async fn run_refund_attempt(
        &self,
        fence: i64,
        refund: Refund,
        charge_reference: String,
    ) -> Result<AttemptEnd, PaymentError> {
        let engine = self.clone();
        let stop = self.inner.stop.clone();
        let task = self.inner.attempts.spawn(with_call_ids(async move {
            tokio::select! {
                biased;
                () = stop.cancelled() => None,
                end = engine.refund_attempt(fence, refund, charge_reference) => Some(end),
            }
        }));
        match task.await {
            Ok(Some(end)) => end,
            Ok(None) | Err(_) => Err(PaymentError::InProgress),
        }
    }

    async fn refund_attempt(
        &self,
        fence: i64,
        refund: Refund,
        charge_reference: String,
    ) -> Result<AttemptEnd, PaymentError> {
        let instruction = RefundInstruction {
            idempotency_key: RefundInstruction::key_for(refund.id),
            refund_id: refund.id,
            charge_reference,
            amount: refund.amount,
        };
        let answer = tokio::time::timeout(
            self.inner.settings.provider_timeout,
            self.inner.provider.refund(&instruction),
        )
        .await;
        let store = &self.inner.store;
        let now = now_micros();
        let recorded = match answer {
            Ok(Ok(RefundOutcome::Refunded { provider_reference })) => {
                store
                    .complete_refund(&refund, fence, &provider_reference, now)
                    .await?
            }
            Ok(Ok(RefundOutcome::Rejected { reason })) => {
                tracing::warn!(refund_id = %refund.id, %reason, "provider refused a refund");
                store.fail_refund(&refund, fence, &reason, now).await?
            }
            Ok(Err(ProviderError::Unavailable(why))) => {
                tracing::warn!(refund_id = %refund.id, attempt = fence, %why, "refund attempt failed transiently");
                store.release_refund(refund.id, fence, now).await?;
                self.notify();
                return Ok(AttemptEnd::ProviderUnavailable);
            }
            Err(_) => {
                tracing::warn!(refund_id = %refund.id, attempt = fence, "refund attempt timed out; outcome unknown until retried");
                store.release_refund(refund.id, fence, now).await?;
                self.notify();
                return Ok(AttemptEnd::ProviderUnavailable);
            }
        };
        if recorded {
            tracing::info!(refund_id = %refund.id, payment_id = %refund.payment_id, "refund resolved");
        }
        self.notify();
        Ok(AttemptEnd::Settled)
    }

    // === reading ===

    /// A payment with its refunds and history.
    pub async fn payment(&self, id: PaymentId) -> Result<Payment, PaymentError> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| PaymentError::NotFound(id.to_string()))
    }

    // === the reconciler's pass ===

    /// Re-drives every PENDING payment and refund whose lease expired and
    /// that nobody touched for `min_age`: the ones whose caller crashed, gave
    /// up, or was answered UNAVAILABLE and never came back. Each goes through
    /// the same claim → provider → record steps as a retry, with the same
    /// provider key, so a charge the provider already made is recorded, not
    /// repeated.
    pub async fn reconcile_once(&self, min_age: Duration) -> Result<ReconcileReport, PaymentError> {
        let store = &self.inner.store;
        let mut report = ReconcileReport::default();
        let now = now_micros();
        let untouched_since = now - i64::try_from(min_age.as_micros()).unwrap_or(i64::MAX / 2);

        for stale in store
            .stale_payments(now, untouched_since, RECONCILE_BATCH)
            .await?
        {
            if self.inner.stop.is_cancelled() {
                return Ok(report);
            }
            let Some(token) = stale.token else {
                tracing::error!(payment_id = %stale.id, "pending payment without a token; leaving it for an operator");
                continue;
            };
            let now = now_micros();
            let lease_until = now + self.inner.settings.lease_micros();
            let Some(fence) = store.claim(stale.id, now, lease_until).await? else {
                continue;
            };
            let Some(payment) = store.get_row(stale.id).await? else {
                continue;
            };
            tracing::info!(payment_id = %stale.id, attempt = fence, "reconciler re-driving a stale pending charge");
            let instruction = ChargeInstruction {
                idempotency_key: ChargeInstruction::key_for(stale.id),
                payment_id: stale.id,
                amount: payment.amount,
                payment_method_token: PaymentMethodToken::from_stored(token),
            };
            self.run_charge_attempt(fence, instruction).await?;
            report.payments += 1;
        }

        for refund_id in store
            .stale_refunds(now, untouched_since, RECONCILE_BATCH)
            .await?
        {
            if self.inner.stop.is_cancelled() {
                return Ok(report);
            }
            let now = now_micros();
            let lease_until = now + self.inner.settings.lease_micros();
            let Some(fence) = store.claim_refund(refund_id, now, lease_until).await? else {
                continue;
            };
            let Some(refund) = store.get_refund(refund_id).await? else {
                continue;
            };
            let Some(payment) = store.get_row(refund.payment_id).await? else {
                continue;
            };
            tracing::info!(%refund_id, attempt = fence, "reconciler re-driving a stale pending refund");
            self.run_refund_attempt(fence, refund, payment.provider_reference)
                .await?;
            report.refunds += 1;
        }
        Ok(report)
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

    fn notify(&self) {
        self.inner
            .changed
            .send_modify(|generation| *generation += 1);
    }
}

/// Whether `amount` more may be refunded from `payment` right now (refunds
/// in flight count as refunded).
fn refundable(payment: &Payment, amount: i64) -> Result<(), PaymentError> {
    let payment_id = payment.id.to_string();
    match payment.state {
        PaymentState::Captured | PaymentState::PartiallyRefunded | PaymentState::Refunded => {
            let remaining = payment.amount.amount.get()
                - payment.refunded_minor
                - payment.refund_reserved_minor;
            if amount > remaining {
                Err(PaymentError::RefundExceedsCaptured {
                    payment_id,
                    remaining,
                })
            } else {
                Ok(())
            }
        }
        state @ (PaymentState::Pending | PaymentState::Declined | PaymentState::Failed) => {
            Err(PaymentError::NotRefundable { payment_id, state })
        }
    }
}
