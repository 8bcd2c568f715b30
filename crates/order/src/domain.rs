//! The order context's domain types. Each parses from untrusted input and, once
//! it exists, is valid: the rest of the crate never re-checks a raw string.

use std::collections::HashSet;
use std::fmt;

use uuid::Uuid;

/// Why a value was refused. The message is written for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub &'static str);

fn parse_uuid_v7(s: &str) -> Result<Uuid, ParseError> {
    if s.is_empty() {
        return Err(ParseError("is required"));
    }
    let uuid = Uuid::try_parse(s).map_err(|_| ParseError("must be a UUID"))?;
    if uuid.get_version_num() != 7 {
        return Err(ParseError("must be a UUIDv7"));
    }
    Ok(uuid)
}

/// An order's id: a UUIDv7, so ids sort by creation time (keyset pagination
/// relies on that). It is also the idempotency key of every remote step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(Uuid);

impl OrderId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the canonical hyphenated form of a UUIDv7.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        parse_uuid_v7(s).map(Self)
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The customer an order belongs to: the user service's UUIDv7 user id, taken
/// from the caller's access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CustomerId(Uuid);

impl CustomerId {
    /// Parses the canonical hyphenated form of a UUIDv7.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        parse_uuid_v7(s).map(Self)
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A caller-chosen idempotency key (AIP-155): any UUID in its canonical
/// 36-character form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(Uuid);

impl RequestId {
    /// Parses a UUID written as 36 hyphenated characters.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError("is required"));
        }
        if s.len() != 36 {
            return Err(ParseError(
                "must be a UUID in its canonical 36-character form",
            ));
        }
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| ParseError("must be a UUID in its canonical 36-character form"))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A product's stock-keeping unit: 1 to 64 characters, each A-Z, 0-9, `-` or `_`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

impl Sku {
    /// Longest sku accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses a sku exactly as given (no trimming or case folding: skus are
    /// identifiers, and a silently changed one would name another product).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError("is required"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(ParseError("must be at most 64 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(ParseError(
                "must contain only upper-case letters A-Z, digits, '-' and '_'",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A sku read back from our own table.
    pub(crate) fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The sku as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Units of one product in an order: 1 to 10 000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(i64);

impl Quantity {
    /// Most units of one product per order.
    pub const MAX: i64 = 10_000;

    /// Parses a quantity.
    pub fn parse(n: i64) -> Result<Self, ParseError> {
        if (1..=Self::MAX).contains(&n) {
            Ok(Self(n))
        } else {
            Err(ParseError("must be between 1 and 10000"))
        }
    }

    /// The number of units.
    pub fn get(self) -> i64 {
        self.0
    }
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
            return Err(ParseError("must have at least one line"));
        }
        if lines.len() > Self::MAX_LINES {
            return Err(ParseError("must have at most 100 lines"));
        }
        let mut seen = HashSet::new();
        if !lines.iter().all(|(sku, _)| seen.insert(sku.clone())) {
            return Err(ParseError("must not name the same sku twice"));
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
        if s.is_empty() {
            return Err(ParseError("is required"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(ParseError("must be at most 256 characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ParseError("must be printable ASCII without spaces"));
        }
        Ok(Self(s.to_owned()))
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
            return Err(ParseError("must be at most 500 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(ParseError("must not contain control characters"));
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
    fn skus_are_upper_case_identifiers() {
        assert!(Sku::parse("MUG-01_B").is_ok());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("mug").is_err());
        assert!(Sku::parse("MUG 1").is_err());
        assert!(Sku::parse(&"A".repeat(65)).is_err());
        assert!(Sku::parse(&"A".repeat(64)).is_ok());
    }

    #[test]
    fn quantities_are_bounded() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-1).is_err());
        assert!(Quantity::parse(10_001).is_err());
        assert_eq!(Quantity::parse(10_000).unwrap().get(), 10_000);
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
    fn request_ids_are_canonical_uuids() {
        assert!(RequestId::parse("6f1c1f9e-2b7a-4c1e-9d1a-6d1f0f7b8a9c").is_ok());
        assert!(RequestId::parse("6f1c1f9e2b7a4c1e9d1a6d1f0f7b8a9c").is_err());
        assert!(RequestId::parse("").is_err());
    }

    #[test]
    fn payment_tokens_never_print() {
        let token = PaymentToken::parse("tok_visa").unwrap();
        assert_eq!(format!("{token:?}"), "PaymentToken(..)");
        assert!(PaymentToken::parse("tok visa").is_err());
    }

    #[test]
    fn order_ids_must_be_v7() {
        assert!(OrderId::parse(&OrderId::new().to_string()).is_ok());
        assert!(OrderId::parse("6f1c1f9e-2b7a-4c1e-9d1a-6d1f0f7b8a9c").is_err());
    }
}
