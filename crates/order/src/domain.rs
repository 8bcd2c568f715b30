//! The order context's domain types. Each parses from untrusted input and, once
//! it exists, is valid: the rest of the crate never re-checks a raw string.

use std::collections::HashSet;
use std::fmt;

use agora_interceptors::api::values::ascii_token;
pub use agora_interceptors::api::values::{ParseError, Quantity, RequestId, Sku};

agora_interceptors::uuid7_id! {
    /// An order's id: a UUIDv7, so ids sort by creation time (keyset
    /// pagination relies on that). It is also the idempotency key of every
    /// remote step.
    pub OrderId
}

agora_interceptors::uuid7_id! {
    /// The customer an order belongs to: the user service's UUIDv7 user id,
    /// taken from the caller's access token.
    pub CustomerId
}

/// An amount in minor units of one currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Money {
    /// ISO-4217 code, e.g. "EUR".
    pub currency: String,
    /// Minor units (cents).
    pub amount_minor: i64,
}

/// What a customer asks for: 1 to 100 lines, no sku twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cart {
    lines: Vec<(Sku, Quantity)>,
}

impl Cart {
    /// Most lines per order.
    pub const MAX_LINES: usize = 100;

    /// A cart from already-parsed lines: refuses none, too many, and repeated
    /// skus.
    pub fn new(lines: Vec<(Sku, Quantity)>) -> Result<Self, ParseError> {
        if lines.is_empty() {
            return Err(ParseError::new("must have at least one line"));
        }
        if lines.len() > Self::MAX_LINES {
            return Err(ParseError::new("must have at most 100 lines"));
        }
        let mut seen = HashSet::new();
        if !lines.iter().all(|(sku, _)| seen.insert(sku.clone())) {
            return Err(ParseError::new("must not name the same sku twice"));
        }
        Ok(Self { lines })
    }

    /// The lines, in the order given.
    pub fn lines(&self) -> &[(Sku, Quantity)] {
        &self.lines
    }

    /// True when `other` asks for the same skus and quantities, in any order:
    /// what AIP-155 calls the same request.
    pub fn same_as(&self, other: &[(Sku, Quantity)]) -> bool {
        let mut mine = self.lines.clone();
        let mut theirs = other.to_vec();
        mine.sort();
        theirs.sort();
        mine == theirs
    }
}

/// The provider's token for the customer's payment method: 1 to 256 printable
/// ASCII characters. Never printed; stored only while the charge may still run.
#[derive(Clone, PartialEq, Eq)]
pub struct PaymentToken(String);

impl PaymentToken {
    /// Longest token accepted.
    pub const MAX_LEN: usize = 256;

    /// Parses a token.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        ascii_token(s, Self::MAX_LEN).map(Self)
    }

    /// A token read back from our own table.
    pub(crate) fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The token, for the charge call and the table only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PaymentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PaymentToken(..)")
    }
}

/// Why an order is cancelled: 0 to 500 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelReason(String);

impl CancelReason {
    /// Parses a reason; surrounding white space is dropped.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s.chars().count() > 500 {
            return Err(ParseError::new("must be at most 500 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(ParseError::new("must not contain control characters"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The reason as text (may be empty).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where an order is in its life, as callers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// The saga is running.
    Pending,
    /// Stock committed and payment captured.
    Confirmed,
    /// The saga failed and was compensated. Final.
    Failed,
    /// A cancellation is under way: refund and restock are being done.
    Cancelling,
    /// Cancelled after confirmation: refunded and restocked. Final.
    Cancelled,
}

impl OrderState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Pending => "PENDING",
            OrderState::Confirmed => "CONFIRMED",
            OrderState::Failed => "FAILED",
            OrderState::Cancelling => "CANCELLING",
            OrderState::Cancelled => "CANCELLED",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => OrderState::Pending,
            "CONFIRMED" => OrderState::Confirmed,
            "FAILED" => OrderState::Failed,
            "CANCELLING" => OrderState::Cancelling,
            "CANCELLED" => OrderState::Cancelled,
            _ => return None,
        })
    }

    /// True while work is under way (PENDING, CANCELLING): the order will
    /// change on its own.
    pub fn is_in_flight(self) -> bool {
        matches!(self, OrderState::Pending | OrderState::Cancelling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, qty: i64) -> (Sku, Quantity) {
        (Sku::parse(sku).unwrap(), Quantity::parse(qty).unwrap())
    }

    #[test]
    fn carts_refuse_repeats_and_compare_without_order() {
        assert!(Cart::new(vec![]).is_err());
        assert!(Cart::new(vec![line("A", 1), line("A", 2)]).is_err());
        let cart = Cart::new(vec![line("A", 1), line("B", 2)]).unwrap();
        assert!(cart.same_as(&[line("B", 2), line("A", 1)]));
        assert!(!cart.same_as(&[line("B", 2), line("A", 3)]));
        assert!(!cart.same_as(&[line("A", 1)]));
    }

    #[test]
    fn payment_tokens_never_print() {
        let token = PaymentToken::parse("tok_visa").unwrap();
        assert_eq!(format!("{token:?}"), "PaymentToken(..)");
        assert!(PaymentToken::parse("tok visa").is_err());
    }
}
