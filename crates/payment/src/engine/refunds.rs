//! Refund: checking and recording a new key (with its reservation on the
//! payment), and what a refund row tells the shared attempt machinery (how it
//! is read, which provider call it makes, how the answer is recorded).

use agora_interceptors::api::time::now_micros;

use super::attempt::{LeasedRow, ProviderCall, Standing};
use super::{MAX_INSERT_RACES, PaymentEngine};
use crate::domain::{Payment, PaymentState, Refund, RefundCommand, RefundId, RefundState};
use crate::error::PaymentError;
use crate::provider::{PaymentProvider, ProviderError, RefundInstruction, RefundOutcome};
use crate::store::{InsertRefundError, PaymentStore, RefundResolution};

impl PaymentEngine {
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
                return self.settle(&PendingRefund { id: existing.id }).await;
            }

            let payment = self.payment_row(command.payment_id).await?;
            if payment.amount.currency != command.amount.currency {
                return Err(PaymentError::CurrencyMismatch {
                    expected: payment.amount.currency.to_string(),
                });
            }
            refundable(&payment, command.amount.amount.get())?;

            let id = RefundId::new();
            let now = now_micros();
            let lease_until = self.inner.settings.lease_until(now);
            match store.insert_refund(id, &command, lease_until, now).await {
                Ok(()) => {
                    tracing::info!(refund_id = %id, payment_id = %payment.id, amount = command.amount.amount.get(), "refund recorded");
                    let refund = recorded_refund(store, id).await?;
                    let call = RefundCall::new(refund, payment.provider_reference);
                    return self.drive_new(PendingRefund { id }, call).await;
                }
                Err(InsertRefundError::Db(error)) => return Err(error),
                Err(InsertRefundError::KeyTaken) => continue,
                Err(InsertRefundError::NotReservable) => {
                    // Refunded or reserved concurrently: say why with fresh numbers.
                    let payment = self.payment_row(command.payment_id).await?;
                    refundable(&payment, command.amount.amount.get())?;
                    // Refundable again (a concurrent refund failed): try again.
                }
            }
        }
        Err(PaymentError::InProgress)
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

/// A recorded refund being brought to an answer.
pub(super) struct PendingRefund {
    id: RefundId,
}

impl LeasedRow for PendingRefund {
    type Id = RefundId;
    type Answer = (Payment, Refund);
    type Call = RefundCall;

    fn stale(id: RefundId) -> Self {
        Self { id }
    }

    fn id(&self) -> RefundId {
        self.id
    }

    /// Resolved: the refund with its payment as it is now; a refund the
    /// provider refused answers REFUND_REJECTED.
    async fn standing(
        &self,
        engine: &PaymentEngine,
    ) -> Result<Standing<(Payment, Refund)>, PaymentError> {
        let refund = recorded_refund(engine.store(), self.id).await?;
        match refund.state {
            RefundState::Succeeded => Ok(Standing::Resolved((
                engine.payment(refund.payment_id).await?,
                refund,
            ))),
            RefundState::Failed => Err(PaymentError::RefundRejected {
                reason: refund.failure_reason,
            }),
            RefundState::Pending => Ok(Standing::Pending {
                lease_until: refund.lease_until,
            }),
        }
    }

    async fn prepare(&self, engine: &PaymentEngine) -> Result<RefundCall, PaymentError> {
        let refund = recorded_refund(engine.store(), self.id).await?;
        let payment = engine.payment_row(refund.payment_id).await?;
        Ok(RefundCall::new(refund, payment.provider_reference))
    }
}

/// One refund attempt: the instruction, and the refund it records.
pub(super) struct RefundCall {
    refund: Refund,
    instruction: RefundInstruction,
}

impl RefundCall {
    /// The provider instruction of every attempt at `refund`, against the
    /// charge the provider knows as `charge_reference`.
    fn new(refund: Refund, charge_reference: String) -> Self {
        let instruction = RefundInstruction {
            idempotency_key: RefundInstruction::key_for(refund.id),
            refund_id: refund.id,
            charge_reference,
            amount: refund.amount,
        };
        Self {
            refund,
            instruction,
        }
    }
}

impl ProviderCall for RefundCall {
    type Id = RefundId;
    type Outcome = RefundOutcome;
    const KIND: &'static str = "refund";

    fn id(&self) -> RefundId {
        self.refund.id
    }

    async fn ask(&self, provider: &dyn PaymentProvider) -> Result<RefundOutcome, ProviderError> {
        provider.refund(&self.instruction).await
    }

    async fn record(
        self,
        store: &PaymentStore,
        fence: i64,
        outcome: RefundOutcome,
        now: i64,
    ) -> Result<(), PaymentError> {
        let resolution = match outcome {
            RefundOutcome::Refunded { provider_reference } => {
                RefundResolution::Succeeded { provider_reference }
            }
            RefundOutcome::Rejected { reason } => {
                tracing::warn!(refund_id = %self.refund.id, %reason, "provider refused a refund");
                RefundResolution::Failed { reason }
            }
        };
        let refund = &self.refund;
        if store
            .resolve_refund(refund, fence, &resolution, now)
            .await?
        {
            tracing::info!(refund_id = %refund.id, payment_id = %refund.payment_id, "refund resolved");
        }
        Ok(())
    }
}

/// The refund's row, which exists once recorded.
async fn recorded_refund(store: &PaymentStore, id: RefundId) -> Result<Refund, PaymentError> {
    store
        .get_refund(id)
        .await?
        .ok_or_else(|| PaymentError::from(anyhow::anyhow!("refund {id} vanished")))
}
