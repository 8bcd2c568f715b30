//! The events this service consumes (`agora.events.v1`), turned into
//! [`Delivery`] values: OrderConfirmed, OrderFailed and OrderCancelled from
//! the order feed, PaymentRefunded from the payment feed.

use agora_proto::events::v1 as pb;
use agora_proto::events::v1::event::Payload;
use prost::Message;

use crate::domain::{Delivery, Kind, Notification};

/// The event types consumed, per source feed.
pub const ORDER_TYPES: &[&str] = &[
    "agora.order.OrderConfirmed",
    "agora.order.OrderFailed",
    "agora.order.OrderCancelled",
];

/// The payment events consumed.
pub const PAYMENT_TYPES: &[&str] = &["agora.payment.PaymentRefunded"];

/// A delivery of `event`, received with `cursor`.
pub fn delivery(event: pb::Event, cursor: String) -> Delivery {
    let encoded = event.encode_to_vec();
    Delivery {
        event_id: event.id.clone(),
        source: event.source.clone(),
        event_type: event.r#type.clone(),
        cursor,
        notification: notification(&event),
        encoded,
    }
}

/// A delivery of a stored (dead-lettered) event, or why it cannot be read.
pub fn decode(encoded: &[u8]) -> Result<Delivery, String> {
    let event = pb::Event::decode(encoded).map_err(|e| format!("undecodable event: {e}"))?;
    Ok(delivery(event, String::new()))
}

fn money(money: Option<&agora_proto::Money>) -> String {
    money.map_or_else(String::new, |m| {
        format!(
            "{}.{:02} {}",
            m.amount_minor / 100,
            m.amount_minor % 100,
            m.currency_code
        )
    })
}

/// What to send for `event`: `None` for an event that notifies nobody.
fn notification(event: &pb::Event) -> Result<Option<Notification>, String> {
    let (user_id, kind, order_id, message) = match &event.payload {
        Some(Payload::OrderConfirmed(e)) => (
            &e.user_id,
            Kind::OrderConfirmed,
            &e.order_id,
            format!(
                "Your order {} is confirmed: {} charged.",
                e.order_id,
                money(e.total.as_ref())
            ),
        ),
        Some(Payload::OrderFailed(e)) => (
            &e.user_id,
            Kind::OrderFailed,
            &e.order_id,
            format!(
                "Your order {} could not be completed ({}): {}",
                e.order_id, e.reason, e.message
            ),
        ),
        Some(Payload::OrderCancelled(e)) => (
            &e.user_id,
            Kind::OrderCancelled,
            &e.order_id,
            format!("Your order {} is cancelled.", e.order_id),
        ),
        Some(Payload::PaymentRefunded(e)) => (
            &e.user_id,
            Kind::PaymentRefunded,
            &e.order_id,
            format!(
                "{} was refunded for order {}.",
                money(e.amount.as_ref()),
                e.order_id
            ),
        ),
        Some(_) => return Ok(None),
        None => return Err(format!("event {} has no payload", event.id)),
    };
    if user_id.is_empty() {
        return Err(format!("event {} names no customer", event.id));
    }
    Ok(Some(Notification {
        event_id: event.id.clone(),
        user_id: user_id.clone(),
        kind,
        order_id: order_id.clone(),
        message,
    }))
}
