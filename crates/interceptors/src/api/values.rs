//! Value types that more than one context parses at its edge, defined once so
//! their rules and their messages to callers cannot drift apart: ids
//! (UUIDv7), AIP-155 request ids, skus, quantities and free-text fields.
//!
//! Each parses from untrusted input or refuses with a [`ParseError`] whose
//! message is written for the caller (it becomes a BadRequest field
//! violation); a value that exists is valid.

use std::borrow::Cow;
use std::fmt;

pub use uuid::Uuid;

/// Why a value was refused. The message is written for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(Cow<'static, str>);

impl ParseError {
    /// A refusal with this message.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// Parses the canonical hyphenated form of a UUIDv7 (ids sort by creation
/// time, which keyset pagination relies on).
pub fn parse_uuid7(s: &str) -> Result<Uuid, ParseError> {
    if s.is_empty() {
        return Err(ParseError::new("is required"));
    }
    let uuid = Uuid::try_parse(s).map_err(|_| ParseError::new("must be a UUID"))?;
    if uuid.get_version_num() != 7 {
        return Err(ParseError::new("must be a UUIDv7"));
    }
    Ok(uuid)
}

/// Declares a UUIDv7 id newtype with `new`, `parse` and `Display` (the
/// canonical hyphenated form):
///
/// ```text
/// agora_interceptors::uuid7_id! {
///     /// An order's id.
///     pub OrderId
/// }
/// ```
#[macro_export]
macro_rules! uuid7_id {
    ($(#[$doc:meta])* $vis:vis $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis struct $name($crate::api::values::Uuid);

        impl $name {
            /// A fresh id.
            pub fn new() -> Self {
                Self($crate::api::values::Uuid::now_v7())
            }

            /// Parses the canonical hyphenated form of a UUIDv7.
            pub fn parse(s: &str) -> Result<Self, $crate::api::values::ParseError> {
                $crate::api::values::parse_uuid7(s).map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

/// A caller-chosen idempotency key (AIP-155): any UUID in its canonical
/// 36-character form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(Uuid);

impl RequestId {
    /// Parses a UUID written as 36 hyphenated characters.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        const FORM: &str = "must be a UUID in its canonical 36-character form";
        if s.is_empty() {
            return Err(ParseError::new("is required"));
        }
        if s.len() != 36 {
            return Err(ParseError::new(FORM));
        }
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| ParseError::new(FORM))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A product's stock-keeping unit, its id everywhere: 1 to 64 characters,
/// each `A-Z`, `0-9`, `-` or `_`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

impl Sku {
    /// Longest sku accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses a sku exactly as given: no trimming, no case folding, since a
    /// silently changed sku would name another product.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::new("is required"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(ParseError::new("must be at most 64 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(ParseError::new(
                "must contain only upper-case letters A-Z, digits, '-' and '_'",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// Rebuilds a sku read back from a service's own table, where it was
    /// parsed on the way in.
    pub fn from_stored(s: String) -> Self {
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

/// Units of one product in an order line or a reservation line: 1 to 10 000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(i64);

impl Quantity {
    /// Most units of one product per line.
    pub const MAX: i64 = 10_000;

    /// Parses a quantity.
    pub fn parse(n: i64) -> Result<Self, ParseError> {
        if (1..=Self::MAX).contains(&n) {
            Ok(Self(n))
        } else {
            Err(ParseError::new("must be between 1 and 10000"))
        }
    }

    /// Rebuilds a quantity read back from a service's own table, where it
    /// was parsed on the way in.
    pub fn from_stored(n: i64) -> Self {
        Self(n)
    }

    /// The number of units.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Parses free text for people (a name, a reason): trimmed, required, at
/// most `max_chars` characters, no control characters.
pub fn text(s: &str, max_chars: usize) -> Result<String, ParseError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ParseError::new("is required"));
    }
    if s.chars().count() > max_chars {
        return Err(ParseError::new(format!(
            "must be at most {max_chars} characters"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(ParseError::new("must not contain control characters"));
    }
    Ok(s.to_owned())
}

/// Parses an opaque token or key a machine made (a payment-method token, an
/// idempotency key): 1 to `max_len` printable ASCII characters, no spaces.
pub fn ascii_token(s: &str, max_len: usize) -> Result<String, ParseError> {
    if s.is_empty() {
        return Err(ParseError::new("is required"));
    }
    if s.len() > max_len {
        return Err(ParseError::new(format!(
            "must be at most {max_len} characters"
        )));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ParseError::new("must be printable ASCII without spaces"));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    uuid7_id! {
        /// An id for the tests.
        TestId
    }

    #[test]
    fn ids_are_uuid7() {
        let id = TestId::new();
        assert_eq!(TestId::parse(&id.to_string()), Ok(id));
        assert!(TestId::parse("").is_err());
        assert!(TestId::parse("not a uuid").is_err());
        // A UUIDv4 is a UUID, but not one that sorts by time.
        assert_eq!(
            TestId::parse("6f0e5c1e-6d4b-4c55-9b8e-1f7c2b3a4d5e")
                .unwrap_err()
                .message(),
            "must be a UUIDv7"
        );
    }

    #[test]
    fn skus_are_taken_as_given() {
        assert_eq!(Sku::parse("SKU-MUG_2").unwrap().as_str(), "SKU-MUG_2");
        for bad in ["", "sku-mug", "SKU MUG", "SKU.MUG", "ÉTÉ"] {
            assert!(Sku::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Sku::parse(&"A".repeat(64)).is_ok());
        assert!(Sku::parse(&"A".repeat(65)).is_err());
    }

    #[test]
    fn quantities_and_request_ids() {
        assert!(Quantity::parse(0).is_err());
        assert_eq!(Quantity::parse(10_000).map(Quantity::get), Ok(10_000));
        assert!(Quantity::parse(10_001).is_err());
        assert!(RequestId::parse("6f0e5c1e-6d4b-4c55-9b8e-1f7c2b3a4d5e").is_ok());
        assert!(RequestId::parse("6f0e5c1e6d4b4c559b8e1f7c2b3a4d5e").is_err());
    }

    #[test]
    fn text_is_trimmed_bounded_and_printable() {
        assert_eq!(text("  Ada  ", 10).unwrap(), "Ada");
        assert_eq!(text("   ", 10).unwrap_err().message(), "is required");
        assert_eq!(
            text("abcdef", 5).unwrap_err().message(),
            "must be at most 5 characters"
        );
        assert!(text("a\u{7}b", 5).is_err());
    }

    #[test]
    fn ascii_tokens_are_printable_and_bounded() {
        assert_eq!(ascii_token("tok_visa", 8).unwrap(), "tok_visa");
        assert!(ascii_token("", 8).is_err());
        assert!(ascii_token("tok visa", 8).is_err());
        assert!(ascii_token("tok_visa1", 8).is_err());
    }
}
