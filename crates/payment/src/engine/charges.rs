//! Charge: recording a new key, and what a payment row tells the shared
//! attempt machinery (how it is read, which provider call it makes, how the
//! answer is recorded).

use agora_interceptors::api::time::now_micros;

use super::attempt::{LeasedRow, ProviderCall, Standing};
use super::{MAX_INSERT_RACES, PaymentEngine};
use crate::domain::{ChargeCommand, Money, Payment, PaymentId, PaymentMethodToken, PaymentState};
use crate::error::PaymentError;
use crate::provider::{ChargeInstruction, ChargeOutcome, PaymentProvider, ProviderError};
use crate::store::{ChargeResolution, InsertPaymentError, PaymentStore};

impl PaymentEngine {
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
                let row = PendingCharge {
                    id: existing.id,
                    token: Some(command.token),
                };
                return self.settle(&row).await;
            }

            let id = PaymentId::new();
            let now = now_micros();
            let lease_until = self.inner.settings.lease_until(now);
            match store.insert_pending(id, &command, lease_until, now).await {
                Ok(()) => {
                    tracing::info!(payment_id = %id, order_id = %command.order_id, "charge recorded");
                    let call = instruction(id, command.amount, command.token.clone());
                    let row = PendingCharge {
                        id,
                        token: Some(command.token),
                    };
                    return self.drive_new(row, call).await;
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
}

/// The provider instruction of every attempt at one payment's charge.
fn instruction(id: PaymentId, amount: Money, token: PaymentMethodToken) -> ChargeInstruction {
    ChargeInstruction {
        idempotency_key: ChargeInstruction::key_for(id),
        payment_id: id,
        amount,
        payment_method_token: token,
    }
}

/// A recorded payment being brought to an answer.
pub(super) struct PendingCharge {
    id: PaymentId,
    /// The caller's token (a retry carries it); without one, the token kept
    /// on the PENDING row is used.
    token: Option<PaymentMethodToken>,
}

impl LeasedRow for PendingCharge {
    type Id = PaymentId;
    type Answer = Payment;
    type Call = ChargeInstruction;

    fn stale(id: PaymentId) -> Self {
        Self { id, token: None }
    }

    fn id(&self) -> PaymentId {
        self.id
    }

    /// Resolved: the payment with its refunds and history.
    async fn standing(&self, engine: &PaymentEngine) -> Result<Standing<Payment>, PaymentError> {
        let payment = engine.payment_row(self.id).await?;
        if payment.state.is_resolved() {
            Ok(Standing::Resolved(engine.payment(self.id).await?))
        } else {
            Ok(Standing::Pending {
                lease_until: payment.lease_until,
            })
        }
    }

    async fn prepare(&self, engine: &PaymentEngine) -> Result<ChargeInstruction, PaymentError> {
        let payment = engine.payment_row(self.id).await?;
        let token = match &self.token {
            Some(token) => token.clone(),
            None => stored_token(engine.store(), self.id).await?,
        };
        Ok(instruction(self.id, payment.amount, token))
    }
}

impl ProviderCall for ChargeInstruction {
    type Id = PaymentId;
    type Outcome = ChargeOutcome;
    const KIND: &'static str = "charge";

    fn id(&self) -> PaymentId {
        self.payment_id
    }

    async fn ask(&self, provider: &dyn PaymentProvider) -> Result<ChargeOutcome, ProviderError> {
        provider.charge(self).await
    }

    async fn record(
        self,
        store: &PaymentStore,
        fence: i64,
        outcome: ChargeOutcome,
        now: i64,
    ) -> Result<(), PaymentError> {
        let id = self.payment_id;
        let resolution = match outcome {
            ChargeOutcome::Approved { provider_reference } => ChargeResolution {
                state: PaymentState::Captured,
                reason: String::new(),
                provider_reference,
            },
            ChargeOutcome::Declined {
                reason,
                provider_reference,
            } => ChargeResolution {
                state: PaymentState::Declined,
                reason,
                provider_reference,
            },
            ChargeOutcome::Rejected { reason } => ChargeResolution {
                state: PaymentState::Failed,
                reason,
                provider_reference: String::new(),
            },
        };
        if store.resolve(id, fence, &resolution, now).await? {
            tracing::info!(payment_id = %id, state = %resolution.state, reason = %resolution.reason, "charge resolved");
        } else {
            tracing::info!(payment_id = %id, attempt = fence, "lease lost before recording; the new holder records the same answer");
        }
        Ok(())
    }
}

/// The token kept on a PENDING payment, for re-driving it without its caller.
async fn stored_token(
    store: &PaymentStore,
    id: PaymentId,
) -> Result<PaymentMethodToken, PaymentError> {
    store
        .pending_token(id)
        .await?
        .map(PaymentMethodToken::from_stored)
        .ok_or_else(|| {
            PaymentError::from(anyhow::anyhow!(
                "pending payment {id} has no payment-method token to charge"
            ))
        })
}
