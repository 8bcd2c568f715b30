//! The notification context's domain types: what is sent, to whom, about
//! what, and what an event delivered by a feed amounts to.

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The order was confirmed.
    OrderConfirmed,
    /// The order failed.
    OrderFailed,
    /// The order was cancelled.
    OrderCancelled,
    /// A payment was refunded.
    PaymentRefunded,
}

impl Kind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OrderConfirmed => "ORDER_CONFIRMED",
            Kind::OrderFailed => "ORDER_FAILED",
            Kind::OrderCancelled => "ORDER_CANCELLED",
            Kind::PaymentRefunded => "PAYMENT_REFUNDED",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ORDER_CONFIRMED" => Kind::OrderConfirmed,
            "ORDER_FAILED" => Kind::OrderFailed,
            "ORDER_CANCELLED" => Kind::OrderCancelled,
            "PAYMENT_REFUNDED" => Kind::PaymentRefunded,
            _ => return None,
        })
    }
}

/// One message to one customer, made from one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The event it was made from; at most one notification per event.
    pub event_id: String,
    /// The customer.
    pub user_id: String,
    /// What it is about.
    pub kind: Kind,
    /// The order concerned.
    pub order_id: String,
    /// The text.
    pub message: String,
}

/// A notification as stored, with when it was sent.
#[derive(Clone, Debug)]
pub struct Sent {
    /// The notification.
    pub notification: Notification,
    /// When (µs since the epoch).
    pub sent_at: i64,
}

/// One event as a feed delivered it.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The event's id (the inbox key).
    pub event_id: String,
    /// Its producer, e.g. `agora/order`.
    pub source: String,
    /// Its type, e.g. `agora.order.OrderConfirmed`.
    pub event_type: String,
    /// The feed cursor after it.
    pub cursor: String,
    /// The event as received, kept for a dead letter's replay.
    pub encoded: Vec<u8>,
    /// What to send; `Err` when the event cannot make one (a malformed
    /// event: it goes to the dead letters after its tries).
    pub notification: Result<Option<Notification>, String>,
}

/// An event given up on.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The event's id.
    pub event_id: String,
    /// Its producer.
    pub source: String,
    /// Its type.
    pub event_type: String,
    /// The event as received.
    pub encoded: Vec<u8>,
    /// How many tries.
    pub attempts: i64,
    /// The last error.
    pub last_error: String,
    /// When it was given up on (µs since the epoch).
    pub dead_at: i64,
}
