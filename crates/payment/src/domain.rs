//! The payment context's domain types. Each parses from untrusted input and,
//! once it exists, is valid: the rest of the crate never re-checks a raw value.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

pub use agora_interceptors::api::values::ParseError;
use agora_interceptors::api::values::{ascii_token, text};
use agora_interceptors::uuid7_id;

uuid7_id! {
    /// A payment's id, assigned by this service.
    pub PaymentId
}
uuid7_id! {
    /// A refund's id, assigned by this service.
    pub RefundId
}
uuid7_id! {
    /// The id of the order a payment is for (owned by the order service).
    pub OrderId
}
uuid7_id! {
    /// The id of the customer who pays (owned by the user service).
    pub UserId
}

/// A three-letter upper-case ISO-4217 currency code such as `USD`.
///
/// Only the shape is checked (three ASCII capitals): the list of currencies
/// changes over time, and the provider refuses one it does not settle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses `USD`, `EUR`, …; lower case and other lengths are refused rather
    /// than corrected, so a caller's bug is seen early.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s.as_bytes() {
            [] => Err(ParseError::new("is required")),
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(ParseError::new(
                "must be a three-letter upper-case ISO-4217 code such as USD",
            )),
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        // Three ASCII capitals are always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A positive amount of minor units, at most [`AmountMinor::MAX`].
///
/// The bound keeps every sum the service computes (refunded + reserved +
/// requested) far inside `i64`, so no arithmetic here can overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AmountMinor(i64);

impl AmountMinor {
    /// The largest amount accepted: 10^12 minor units (ten billion in a
    /// two-decimal currency).
    pub const MAX: i64 = 1_000_000_000_000;

    /// Parses a charge or refund amount: positive and at most [`Self::MAX`].
    pub fn parse(value: i64) -> Result<Self, ParseError> {
        if value <= 0 {
            Err(ParseError::new("must be positive"))
        } else if value > Self::MAX {
            Err(ParseError::new("must be at most 1000000000000 minor units"))
        } else {
            Ok(Self(value))
        }
    }

    /// The number of minor units.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// An amount in a currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    /// How much, in minor units.
    pub amount: AmountMinor,
    /// Of which currency.
    pub currency: Currency,
}

/// Declares a caller-supplied printable-ASCII string with a length bound.
macro_rules! ascii_text {
    ($(#[$doc:meta])* $name:ident, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// Most characters accepted.
            pub const MAX_LEN: usize = $max;

            /// Parses 1 to `MAX_LEN` printable ASCII characters (no spaces or
            /// control characters).
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                ascii_token(s, Self::MAX_LEN).map(Self)
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

ascii_text! {
    /// The caller's key that makes a Charge or Refund happen at most once.
    IdempotencyKey, 128
}
ascii_text! {
    /// The provider's token for a customer's payment method. Kept in the
    /// database only while its charge is PENDING; never logged.
    PaymentMethodToken, 256
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", self.0)
    }
}

impl fmt::Debug for PaymentMethodToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PaymentMethodToken(<redacted>)")
    }
}

impl PaymentMethodToken {
    /// Rebuilds a token read back from storage, where it was validated on entry.
    pub(crate) fn from_stored(s: String) -> Self {
        Self(s)
    }
}

/// Why money is returned, for people: 1 to 500 characters, no control
/// characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundReason(String);

impl RefundReason {
    /// Parses a reason (surrounding white space dropped).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        text(s, 500).map(Self)
    }

    /// The reason.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a payment is in its life. The transitions are in
/// [`engine`](crate::engine)'s docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentState {
    /// Recorded; the provider's answer is still outstanding.
    Pending,
    /// The provider took the full amount.
    Captured,
    /// The provider refused the charge; final, no money taken.
    Declined,
    /// Part of the captured amount was refunded.
    PartiallyRefunded,
    /// All of it was refunded; final.
    Refunded,
    /// Given up for a reason other than a decline; final, no money taken.
    Failed,
}

impl PaymentState {
    /// The stored (and logged) name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Pending => "PENDING",
            PaymentState::Captured => "CAPTURED",
            PaymentState::Declined => "DECLINED",
            PaymentState::PartiallyRefunded => "PARTIALLY_REFUNDED",
            PaymentState::Refunded => "REFUNDED",
            PaymentState::Failed => "FAILED",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => PaymentState::Pending,
            "CAPTURED" => PaymentState::Captured,
            "DECLINED" => PaymentState::Declined,
            "PARTIALLY_REFUNDED" => PaymentState::PartiallyRefunded,
            "REFUNDED" => PaymentState::Refunded,
            "FAILED" => PaymentState::Failed,
            _ => return None,
        })
    }

    /// True once the charge itself has an answer (anything but PENDING).
    pub fn is_resolved(self) -> bool {
        self != PaymentState::Pending
    }
}

impl fmt::Display for PaymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a refund is: recorded, done, or refused by the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefundState {
    /// Recorded (its amount reserved on the payment); the provider's answer is
    /// outstanding.
    Pending,
    /// The provider returned the money.
    Succeeded,
    /// The provider refused; the reservation was released.
    Failed,
}

impl RefundState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundState::Pending => "PENDING",
            RefundState::Succeeded => "SUCCEEDED",
            RefundState::Failed => "FAILED",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => RefundState::Pending,
            "SUCCEEDED" => RefundState::Succeeded,
            "FAILED" => RefundState::Failed,
            _ => return None,
        })
    }
}

/// One entry of a payment's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state entered.
    pub state: PaymentState,
    /// When, in microseconds since the epoch.
    pub at: i64,
    /// Why, for people (a decline reason, a refund id); may be empty.
    pub note: String,
}

/// A refund as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    /// Its id.
    pub id: RefundId,
    /// The payment refunded.
    pub payment_id: PaymentId,
    /// How much, in the payment's currency.
    pub amount: Money,
    /// Why, as given.
    pub reason: String,
    /// Where it is.
    pub state: RefundState,
    /// Why the provider refused it (FAILED only).
    pub failure_reason: String,
    /// The provider's id for the refund, once answered.
    pub provider_reference: String,
    /// The caller's key.
    pub idempotency_key: String,
    /// Fingerprint of the request that created it.
    pub request_fingerprint: String,
    /// Provider attempts so far (the lease's fencing token).
    pub attempts: i64,
    /// Until when the current lease holder may call the provider.
    pub lease_until: i64,
    /// Recorded at (microseconds).
    pub created_at: i64,
    /// Last change (microseconds); the completion time once not PENDING.
    pub updated_at: i64,
}

/// A payment as stored, with its completed refunds and its history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// Its id.
    pub id: PaymentId,
    /// The order paid for.
    pub order_id: OrderId,
    /// The customer who paid.
    pub user_id: UserId,
    /// The amount charged.
    pub amount: Money,
    /// Refunded so far, in minor units of `amount`'s currency.
    pub refunded_minor: i64,
    /// Reserved by refunds still waiting for the provider.
    pub refund_reserved_minor: i64,
    /// Where it is.
    pub state: PaymentState,
    /// Why it was declined or failed; empty otherwise.
    pub decline_reason: String,
    /// The provider's id for the charge, once answered.
    pub provider_reference: String,
    /// The caller's key.
    pub idempotency_key: String,
    /// Fingerprint of the request that created it.
    pub request_fingerprint: String,
    /// Provider attempts so far (the lease's fencing token).
    pub attempts: i64,
    /// Until when the current lease holder may call the provider.
    pub lease_until: i64,
    /// Recorded at (microseconds).
    pub created_at: i64,
    /// Last change (microseconds).
    pub updated_at: i64,
    /// Completed refunds, oldest first.
    pub refunds: Vec<Refund>,
    /// Every state entered, oldest first.
    pub history: Vec<Transition>,
}

/// A parsed Charge request.
#[derive(Clone, Debug)]
pub struct ChargeCommand {
    /// The order to pay for.
    pub order_id: OrderId,
    /// The customer paying.
    pub user_id: UserId,
    /// How much.
    pub amount: Money,
    /// With what.
    pub token: PaymentMethodToken,
    /// At most once per this key.
    pub idempotency_key: IdempotencyKey,
}

impl ChargeCommand {
    /// A digest of everything that makes two Charge requests "the same": a
    /// repeat of the key must carry the same order, user, amount and token.
    /// The token enters only hashed, so the digest can outlive it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&[
            "charge",
            &self.order_id.to_string(),
            &self.user_id.to_string(),
            &self.amount.amount.get().to_string(),
            self.amount.currency.as_str(),
            self.token.as_str(),
        ])
    }
}

/// A parsed Refund request.
#[derive(Clone, Debug)]
pub struct RefundCommand {
    /// The payment to refund.
    pub payment_id: PaymentId,
    /// How much (the currency is checked against the payment's).
    pub amount: Money,
    /// Why.
    pub reason: RefundReason,
    /// At most once per this key.
    pub idempotency_key: IdempotencyKey,
}

impl RefundCommand {
    /// A digest of the payment, amount and reason, compared on a repeat of
    /// the key.
    pub fn fingerprint(&self) -> String {
        fingerprint(&[
            "refund",
            &self.payment_id.to_string(),
            &self.amount.amount.get().to_string(),
            self.amount.currency.as_str(),
            self.reason.as_str(),
        ])
    }
}

/// SHA-256 over the parts, JSON-encoded so no two lists of parts collide.
fn fingerprint(parts: &[&str]) -> String {
    let encoded = serde_json::to_vec(parts).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(Sha256::digest(&encoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies() {
        assert_eq!(Currency::parse("USD").unwrap().as_str(), "USD");
        for bad in ["", "usd", "US", "USDX", "U$D", "ÉUR"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn amounts_are_positive_and_bounded() {
        assert_eq!(AmountMinor::parse(1).unwrap().get(), 1);
        assert!(AmountMinor::parse(AmountMinor::MAX).is_ok());
        for bad in [0, -1, AmountMinor::MAX + 1, i64::MAX, i64::MIN] {
            assert!(AmountMinor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_and_tokens() {
        assert!(IdempotencyKey::parse("order-1/charge").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
        for bad in ["", "has space", "tab\t", "é"] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_err());
        let token = PaymentMethodToken::parse("tok_visa").unwrap();
        assert!(!format!("{token:?}").contains("visa"));
    }

    #[test]
    fn ids_must_be_uuid_v7() {
        let id = OrderId::new();
        assert_eq!(OrderId::parse(&id.to_string()).unwrap(), id);
        assert!(OrderId::parse("").is_err());
        assert!(OrderId::parse("0b9a2f5e-3c57-4a4e-9d8e-2f0c1c9b4a11").is_err());
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let base = ChargeCommand {
            order_id: OrderId::new(),
            user_id: UserId::new(),
            amount: Money {
                amount: AmountMinor::parse(100).unwrap(),
                currency: Currency::parse("EUR").unwrap(),
            },
            token: PaymentMethodToken::parse("tok_visa").unwrap(),
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
        };
        let mut other_key = base.clone();
        other_key.idempotency_key = IdempotencyKey::parse("k2").unwrap();
        assert_eq!(base.fingerprint(), other_key.fingerprint());
        let mut other_amount = base.clone();
        other_amount.amount.amount = AmountMinor::parse(101).unwrap();
        assert_ne!(base.fingerprint(), other_amount.fingerprint());
        let mut other_token = base.clone();
        other_token.token = PaymentMethodToken::parse("tok_declined").unwrap();
        assert_ne!(base.fingerprint(), other_token.fingerprint());
        assert!(!base.fingerprint().contains("tok_visa"));
    }

    #[test]
    fn refund_reasons() {
        assert_eq!(
            RefundReason::parse("  damaged ").unwrap().as_str(),
            "damaged"
        );
        assert!(RefundReason::parse(" ").is_err());
        assert!(RefundReason::parse(&"x".repeat(501)).is_err());
        assert!(RefundReason::parse("a\nb").is_err());
    }
}
