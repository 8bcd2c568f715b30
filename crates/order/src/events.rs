//! The order context's domain events in their wire form
//! (`agora.events.v1`), appended to the outbox by [`crate::store`] in the
//! transaction of the change that causes them: OrderPlaced when an order is
//! recorded, and OrderConfirmed, OrderFailed or OrderCancelled when a saga
//! transition moves it into that state.

use agora_interceptors::outbox::NewEvent;
use agora_proto::events::v1 as pb;
use agora_proto::events::v1::event::Payload;

use crate::domain::{CustomerId, OrderId, OrderState, Quantity, Sku};

/// What the `orders` row says after a transition, as the events need it.
#[derive(Debug)]
pub struct AfterTransition {
    /// Who placed the order.
    pub user_id: String,
    /// The total's currency, once priced.
    pub currency: Option<String>,
    /// The total in minor units, once priced.
    pub total_minor: Option<i64>,
    /// The payment, once charged.
    pub payment_id: Option<String>,
    /// Why the saga failed.
    pub failure_reason: String,
    /// Why, for people.
    pub failure_message: String,
    /// Why the order was cancelled.
    pub cancel_reason: String,
}

/// OrderPlaced.
pub fn placed(id: OrderId, customer: CustomerId, lines: &[(Sku, Quantity)]) -> NewEvent {
    NewEvent::new(
        id.to_string(),
        Payload::OrderPlaced(pb::OrderPlaced {
            order_id: id.to_string(),
            user_id: customer.to_string(),
            lines: lines
                .iter()
                .map(|(sku, quantity)| pb::StockLine {
                    sku: sku.as_str().to_owned(),
                    quantity: quantity.get(),
                })
                .collect(),
        }),
    )
}

/// The event of a transition into `state`, if that state has one.
pub fn entered(id: OrderId, state: OrderState, row: AfterTransition) -> Option<NewEvent> {
    let order_id = id.to_string();
    let payload = match state {
        OrderState::Confirmed => Payload::OrderConfirmed(pb::OrderConfirmed {
            order_id: order_id.clone(),
            user_id: row.user_id,
            total: row
                .currency
                .zip(row.total_minor)
                .map(|(currency_code, amount_minor)| agora_proto::Money {
                    currency_code,
                    amount_minor,
                }),
            payment_id: row.payment_id.unwrap_or_default(),
        }),
        OrderState::Failed => Payload::OrderFailed(pb::OrderFailed {
            order_id: order_id.clone(),
            user_id: row.user_id,
            reason: row.failure_reason,
            message: row.failure_message,
        }),
        OrderState::Cancelled => Payload::OrderCancelled(pb::OrderCancelled {
            order_id: order_id.clone(),
            user_id: row.user_id,
            reason: row.cancel_reason,
        }),
        OrderState::Pending | OrderState::Cancelling => return None,
    };
    Some(NewEvent::new(order_id, payload))
}
