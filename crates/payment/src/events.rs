//! The payment context's domain events in their wire form
//! (`agora.events.v1`), appended to the outbox by [`crate::store`] in the
//! transaction that records the provider's answer: PaymentCaptured or
//! PaymentFailed when a charge resolves, PaymentRefunded when a refund
//! succeeds.

use agora_interceptors::outbox::NewEvent;
use agora_proto::events::v1 as pb;
use agora_proto::events::v1::event::Payload;

use crate::domain::{PaymentId, PaymentState, RefundId};

/// Whose payment, for which order, as a resolved row reads it.
#[derive(Debug)]
pub struct Owner {
    /// The order paid for.
    pub order_id: String,
    /// The customer.
    pub user_id: String,
}

/// An amount as a resolved row reads it.
#[derive(Debug)]
pub struct Amount {
    /// Minor units.
    pub minor: i64,
    /// ISO-4217 code.
    pub currency: String,
}

impl Amount {
    fn wire(self) -> agora_proto::Money {
        agora_proto::Money {
            currency_code: self.currency,
            amount_minor: self.minor,
        }
    }
}

/// The event of a charge resolved to `state`: PaymentCaptured, or
/// PaymentFailed (declined or given up) with `reason`.
pub fn charge_resolved(
    id: PaymentId,
    owner: Owner,
    state: PaymentState,
    reason: &str,
    amount: Amount,
) -> Option<NewEvent> {
    let payment_id = id.to_string();
    let payload = match state {
        PaymentState::Captured => Payload::PaymentCaptured(pb::PaymentCaptured {
            payment_id: payment_id.clone(),
            order_id: owner.order_id,
            amount: Some(amount.wire()),
            user_id: owner.user_id,
        }),
        PaymentState::Declined | PaymentState::Failed => {
            Payload::PaymentFailed(pb::PaymentFailed {
                payment_id: payment_id.clone(),
                order_id: owner.order_id,
                user_id: owner.user_id,
                reason: if reason.is_empty() {
                    state.as_str().to_owned()
                } else {
                    reason.to_owned()
                },
            })
        }
        PaymentState::Pending | PaymentState::PartiallyRefunded | PaymentState::Refunded => {
            return None;
        }
    };
    Some(NewEvent::new(payment_id, payload))
}

/// PaymentRefunded.
pub fn refunded(id: PaymentId, owner: Owner, refund: RefundId, amount: Amount) -> NewEvent {
    NewEvent::new(
        id.to_string(),
        Payload::PaymentRefunded(pb::PaymentRefunded {
            payment_id: id.to_string(),
            order_id: owner.order_id,
            user_id: owner.user_id,
            refund_id: refund.to_string(),
            amount: Some(amount.wire()),
        }),
    )
}
