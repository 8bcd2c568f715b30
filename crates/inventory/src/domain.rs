//! The inventory context's domain types. Each parses from untrusted input and,
//! once it exists, is valid: the store and the gRPC adapter never re-check a raw
//! string or number.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use agora_interceptors::api::values::text;

use crate::currency;

pub use agora_interceptors::api::values::{ParseError, Quantity, RequestId, Sku};

/// The name shown to shoppers: 1 to 200 characters after trimming, no control
/// characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    /// Parses a name.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        text(s, 200).map(Self)
    }

    pub(crate) fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longer text shown to shoppers: 0 to 2000 characters; line breaks and tabs
/// are allowed, other control characters are not.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Description(String);

impl Description {
    /// Parses a description (surrounding white space dropped).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s.chars().count() > 2000 {
            return Err(ParseError::new("must be at most 2000 characters"));
        }
        if s.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(ParseError::new(
                "must not contain control characters other than line breaks and tabs",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub(crate) fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A circulating ISO-4217 currency, by its three-letter upper-case code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency(&'static str);

impl Currency {
    /// Parses a code such as "EUR".
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::new("is required"));
        }
        if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ParseError::new(
                "must be a three-letter upper-case ISO-4217 code such as EUR",
            ));
        }
        currency::lookup(s)
            .map(Self)
            .ok_or_else(|| ParseError::new(format!("{s} is not a circulating ISO-4217 currency")))
    }

    /// The code.
    pub fn code(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A product's unit price: a positive amount of minor units in one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    amount_minor: i64,
    currency: Currency,
}

impl Price {
    /// Highest unit price accepted, in minor units. With at most 100 lines of
    /// at most 10 000 units, a reservation's total stays far inside an `i64`,
    /// so totals never overflow.
    pub const MAX_MINOR: i64 = 1_000_000_000_000;

    /// Parses an amount in minor units.
    pub fn parse_amount(amount_minor: i64) -> Result<i64, ParseError> {
        if amount_minor <= 0 {
            return Err(ParseError::new("must be positive"));
        }
        if amount_minor > Self::MAX_MINOR {
            return Err(ParseError::new("must be at most 1000000000000 minor units"));
        }
        Ok(amount_minor)
    }

    /// A price from an amount and currency parsed separately.
    pub fn new(amount_minor: i64, currency: Currency) -> Result<Self, ParseError> {
        Ok(Self {
            amount_minor: Self::parse_amount(amount_minor)?,
            currency,
        })
    }

    /// Minor units.
    pub fn amount_minor(self) -> i64 {
        self.amount_minor
    }

    /// Currency.
    pub fn currency(self) -> Currency {
        self.currency
    }
}

/// A change to a product's on-hand count: non-zero, at most 10^9 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StockDelta(i64);

impl StockDelta {
    /// Largest change one adjustment may make, either way.
    pub const MAX_ABS: i64 = 1_000_000_000;

    /// Parses a delta.
    pub fn parse(n: i64) -> Result<Self, ParseError> {
        if n == 0 {
            return Err(ParseError::new("must not be zero"));
        }
        if n.unsigned_abs() > Self::MAX_ABS as u64 {
            return Err(ParseError::new(
                "must be between -1000000000 and 1000000000",
            ));
        }
        Ok(Self(n))
    }

    pub(crate) fn from_stored(n: i64) -> Self {
        Self(n)
    }

    /// The signed change.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Most units a product may have on hand; adjustments past it are refused, so
/// stock arithmetic never overflows.
pub const MAX_ON_HAND: i64 = 1_000_000_000_000;

/// Why stock changed, for the audit trail: 1 to 500 characters after trimming.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdjustmentReason(String);

impl AdjustmentReason {
    /// Parses a reason.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        text(s, 500).map(Self)
    }

    pub(crate) fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

agora_interceptors::uuid7_id! {
    /// The order a reservation belongs to: a UUIDv7, as the order service mints.
    pub OrderId
}

/// What a ReserveStock asks for: 1 to 100 skus, each once, with a quantity.
/// Kept sorted by sku, which is also the order rows are locked in, so two
/// reservations over the same skus can never deadlock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedLines(BTreeMap<Sku, Quantity>);

impl RequestedLines {
    /// Most lines one reservation may have.
    pub const MAX_LINES: usize = 100;

    /// Builds the lines from parsed (sku, quantity) pairs; a repeated sku is
    /// refused with the index of its second appearance.
    pub fn new(lines: Vec<(Sku, Quantity)>) -> Result<Self, (Option<usize>, ParseError)> {
        if lines.is_empty() {
            return Err((None, ParseError::new("must have at least one line")));
        }
        if lines.len() > Self::MAX_LINES {
            return Err((None, ParseError::new("must have at most 100 lines")));
        }
        let mut map = BTreeMap::new();
        for (index, (sku, quantity)) in lines.into_iter().enumerate() {
            if map.insert(sku, quantity).is_some() {
                return Err((
                    Some(index),
                    ParseError::new("repeats a sku of an earlier line"),
                ));
            }
        }
        Ok(Self(map))
    }

    /// The lines in sku order.
    pub fn iter(&self) -> impl Iterator<Item = (&Sku, Quantity)> {
        self.0.iter().map(|(sku, quantity)| (sku, *quantity))
    }

    /// Whether a stored reservation holds exactly these skus and quantities.
    pub fn matches(&self, lines: &[ReservedLine]) -> bool {
        lines.len() == self.0.len()
            && lines
                .iter()
                .all(|line| self.0.get(&line.sku) == Some(&line.quantity))
    }
}

/// How long a new reservation is held, within the server's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttl(Duration);

impl Ttl {
    /// The requested ttl: `None` or zero means `default`; longer than `max` is
    /// refused. (Negative durations are refused while converting from protobuf.)
    pub fn resolve(
        requested: Option<Duration>,
        default: Duration,
        max: Duration,
    ) -> Result<Self, ParseError> {
        match requested {
            None => Ok(Self(default.min(max))),
            Some(ttl) if ttl.is_zero() => Ok(Self(default.min(max))),
            Some(ttl) if ttl > max => Err(ParseError::new(format!(
                "must be at most {}",
                humantime::format_duration(max)
            ))),
            Some(ttl) => Ok(Self(ttl)),
        }
    }

    /// The ttl in microseconds, as instants are stored.
    pub fn as_micros(self) -> i64 {
        i64::try_from(self.0.as_micros()).unwrap_or(i64::MAX)
    }
}

/// A product as stored, with its stock counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    /// Its sku.
    pub sku: Sku,
    /// Its name.
    pub name: ProductName,
    /// Its description.
    pub description: Description,
    /// Its unit price.
    pub price: Price,
    /// Units in the warehouse, reserved ones included.
    pub on_hand: i64,
    /// Units held by HELD reservations.
    pub reserved: i64,
    /// Below this many available units a StockLow event is emitted (0:
    /// never).
    pub low_stock_threshold: i64,
    /// Creation instant, microseconds since the epoch.
    pub created_at: i64,
    /// Last change, microseconds since the epoch.
    pub updated_at: i64,
}

impl Product {
    /// Units that can still be reserved.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// A new product, before it has stock.
#[derive(Clone, Debug)]
pub struct NewProduct {
    /// Its sku.
    pub sku: Sku,
    /// Its name.
    pub name: ProductName,
    /// Its description.
    pub description: Description,
    /// Its unit price.
    pub price: Price,
    /// Its low-stock threshold, 0 to [`MAX_ON_HAND`].
    pub low_stock_threshold: i64,
}

/// An AdjustStock request, parsed.
#[derive(Clone, Debug)]
pub struct Adjustment {
    /// The product.
    pub sku: Sku,
    /// The change.
    pub delta: StockDelta,
    /// Why.
    pub reason: AdjustmentReason,
    /// The idempotency key.
    pub request_id: RequestId,
}

/// Where a reservation is in its life (see the proto for the transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationState {
    /// Units counted in `reserved`.
    Held,
    /// Units sold: they left `reserved` and `on_hand`.
    Committed,
    /// Units given back, from HELD or COMMITTED.
    Released,
    /// Still HELD at its expiry: units given back by the server.
    Expired,
}

impl ReservationState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "HELD",
            Self::Committed => "COMMITTED",
            Self::Released => "RELEASED",
            Self::Expired => "EXPIRED",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "HELD" => Some(Self::Held),
            "COMMITTED" => Some(Self::Committed),
            "RELEASED" => Some(Self::Released),
            "EXPIRED" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// One line of a reservation, with the unit price captured when it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservedLine {
    /// The product.
    pub sku: Sku,
    /// Units held.
    pub quantity: Quantity,
    /// Price of one unit at reservation time, in the reservation's currency.
    pub unit_price_minor: i64,
}

/// Stock held for one order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The order.
    pub order_id: OrderId,
    /// Its state.
    pub state: ReservationState,
    /// Its lines, in sku order.
    pub lines: Vec<ReservedLine>,
    /// The lines' shared currency.
    pub currency: Currency,
    /// Sum of quantity × unit price.
    pub total_minor: i64,
    /// When a HELD reservation expires, microseconds since the epoch.
    pub expires_at: i64,
    /// Creation instant.
    pub created_at: i64,
    /// Last state change.
    pub updated_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_descriptions() {
        assert_eq!(ProductName::parse("  Mug ").unwrap().as_str(), "Mug");
        assert!(ProductName::parse(" ").is_err());
        assert!(ProductName::parse("a\u{0}b").is_err());
        assert!(ProductName::parse(&"é".repeat(201)).is_err());
        assert_eq!(Description::parse("").unwrap().as_str(), "");
        assert!(Description::parse("two\nlines\tand a tab").is_ok());
        assert!(Description::parse("bell\u{7}").is_err());
        assert!(Description::parse(&"x".repeat(2001)).is_err());
    }

    #[test]
    fn currencies_and_prices() {
        assert_eq!(Currency::parse("EUR").unwrap().code(), "EUR");
        assert_eq!(Currency::parse("JPY").unwrap().code(), "JPY");
        for bad in ["", "eur", "EURO", "E1R", "ABC", "XXX", "XAU"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let eur = Currency::parse("EUR").unwrap();
        assert!(Price::new(1, eur).is_ok());
        assert!(Price::new(0, eur).is_err());
        assert!(Price::new(-5, eur).is_err());
        assert!(Price::new(Price::MAX_MINOR, eur).is_ok());
        assert!(Price::new(Price::MAX_MINOR + 1, eur).is_err());
        // The largest possible total fits in an i64.
        let max_total = (Price::MAX_MINOR as i128)
            * (Quantity::MAX as i128)
            * (RequestedLines::MAX_LINES as i128);
        assert!(max_total < i64::MAX as i128);
    }

    #[test]
    fn deltas() {
        assert!(StockDelta::parse(0).is_err());
        assert!(StockDelta::parse(-1).is_ok());
        assert!(StockDelta::parse(-1_000_000_000).is_ok());
        assert!(StockDelta::parse(1_000_000_001).is_err());
        assert!(StockDelta::parse(i64::MIN).is_err());
    }

    #[test]
    fn lines_are_sorted_unique_and_compared_as_sets() {
        let line = |sku: &str, n| (Sku::parse(sku).unwrap(), Quantity::parse(n).unwrap());
        let lines = RequestedLines::new(vec![line("B", 2), line("A", 1)]).unwrap();
        let skus: Vec<_> = lines.iter().map(|(s, _)| s.as_str().to_owned()).collect();
        assert_eq!(skus, ["A", "B"]);
        let (index, _) = RequestedLines::new(vec![line("A", 1), line("A", 2)]).unwrap_err();
        assert_eq!(index, Some(1));
        assert!(RequestedLines::new(vec![]).is_err());

        let stored = |sku: &str, n| ReservedLine {
            sku: Sku::parse(sku).unwrap(),
            quantity: Quantity::parse(n).unwrap(),
            unit_price_minor: 100,
        };
        assert!(lines.matches(&[stored("A", 1), stored("B", 2)]));
        assert!(!lines.matches(&[stored("A", 1), stored("B", 3)]));
        assert!(!lines.matches(&[stored("A", 1)]));
        assert!(!lines.matches(&[stored("A", 1), stored("B", 2), stored("C", 1)]));
    }

    #[test]
    fn ttls() {
        let default = Duration::from_secs(900);
        let max = Duration::from_secs(86_400);
        assert_eq!(Ttl::resolve(None, default, max).unwrap(), Ttl(default));
        assert_eq!(
            Ttl::resolve(Some(Duration::ZERO), default, max).unwrap(),
            Ttl(default)
        );
        assert_eq!(
            Ttl::resolve(Some(Duration::from_secs(5)), default, max)
                .unwrap()
                .as_micros(),
            5_000_000
        );
        assert!(Ttl::resolve(Some(max + Duration::from_secs(1)), default, max).is_err());
    }
}
