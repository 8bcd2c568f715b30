//! The user context's domain types. Each parses from untrusted input and, once it
//! exists, is valid: the rest of the crate never re-checks a raw string.

use std::fmt;

use agora_interceptors::api::values::text;
use agora_interceptors::auth::Role;

pub use agora_interceptors::api::values::ParseError;

agora_interceptors::uuid7_id! {
    /// A user's id: a UUIDv7, so ids sort by creation time (keyset pagination
    /// relies on that).
    pub UserId
}

/// An email address as typed, with its case-insensitive form for uniqueness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    as_typed: String,
    normalized: String,
}

impl Email {
    /// Most characters an address may have (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;

    /// Parses an address: one `@`, a local part of 1 to 64 characters, a domain
    /// with a dot that neither starts nor ends with one, no spaces or control
    /// characters. Surrounding white space is dropped.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseError::new("is required"));
        }
        if s.chars().count() > Self::MAX_LEN {
            return Err(ParseError::new("must be at most 254 characters"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ParseError::new(
                "must not contain spaces or control characters",
            ));
        }
        let (local, domain) = s
            .split_once('@')
            .ok_or(ParseError::new("must contain an @"))?;
        if domain.contains('@') {
            return Err(ParseError::new("must contain exactly one @"));
        }
        if local.is_empty() || local.chars().count() > 64 {
            return Err(ParseError::new("must have 1 to 64 characters before the @"));
        }
        if !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return Err(ParseError::new(
                "must have a domain such as example.com after the @",
            ));
        }
        Ok(Self {
            as_typed: s.to_owned(),
            normalized: s.to_lowercase(),
        })
    }

    /// Rebuilds an address read back from storage, where it was validated on entry.
    pub(crate) fn from_stored(as_typed: String, normalized: String) -> Self {
        Self {
            as_typed,
            normalized,
        }
    }

    /// The address as the user typed it.
    pub fn as_str(&self) -> &str {
        &self.as_typed
    }

    /// The lower-cased form that must be unique.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

/// The name shown to others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Parses a name: 1 to 100 characters after trimming, no control characters.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        text(s, 100).map(Self)
    }

    /// Rebuilds a name read back from storage.
    pub(crate) fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password as given, before hashing. Never printed, never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    /// Fewest characters a new password may have (NIST SP 800-63B suggests 8 at
    /// the least; 12 keeps brute force out of reach for argon2id-hashed secrets).
    pub const MIN_CHARS: usize = 12;
    /// Most characters, bounding the hashing work one request can cause.
    pub const MAX_CHARS: usize = 128;

    /// Parses a new password: 12 to 128 characters, not only white space. No
    /// composition rules (NIST SP 800-63B advises against them).
    pub fn parse_new(s: &str) -> Result<Self, ParseError> {
        let chars = s.chars().count();
        if chars == 0 {
            return Err(ParseError::new("is required"));
        }
        if chars < Self::MIN_CHARS {
            return Err(ParseError::new("must be at least 12 characters"));
        }
        if chars > Self::MAX_CHARS {
            return Err(ParseError::new("must be at most 128 characters"));
        }
        if s.trim().is_empty() {
            return Err(ParseError::new("must not be only white space"));
        }
        Ok(Self(s.to_owned()))
    }

    /// Accepts a password offered at sign-in: only emptiness and the length bound
    /// are checked, since old accounts may predate today's rules.
    pub fn parse_offered(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::new("is required"));
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(ParseError::new("must be at most 128 characters"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The secret, for hashing.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

/// The roles a stored user can have. Service identities are never users.
pub fn parse_user_role(role: Role) -> Result<Role, ParseError> {
    match role {
        Role::Customer | Role::Admin => Ok(role),
        Role::Service => Err(ParseError::new("must be ROLE_CUSTOMER or ROLE_ADMIN")),
    }
}

/// A registered account, without its password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Its email.
    pub email: Email,
    /// Its display name.
    pub display_name: DisplayName,
    /// Customer or admin.
    pub role: Role,
    /// Creation instant, microseconds since the epoch.
    pub created_at: i64,
    /// Last change, microseconds since the epoch.
    pub updated_at: i64,
    /// Disabled by an admin: cannot sign in, tokens revoked.
    pub disabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        let email = Email::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Ada.Lovelace@Example.COM");
        assert_eq!(email.normalized(), "ada.lovelace@example.com");
        for bad in [
            "",
            "no-at",
            "a@b",
            "@example.com",
            "a@@example.com",
            "a b@example.com",
            "a@.com",
            "a@example.",
            "a@ex..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn display_names() {
        assert_eq!(DisplayName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(101)).is_err());
    }

    #[test]
    fn passwords() {
        assert!(Password::parse_new("correct horse battery").is_ok());
        assert!(Password::parse_new("short").is_err());
        assert!(Password::parse_new(&" ".repeat(20)).is_err());
        assert!(Password::parse_new(&"x".repeat(129)).is_err());
        assert!(Password::parse_offered("short").is_ok());
        assert!(
            !format!(
                "{:?}",
                Password::parse_new("correct horse battery").unwrap()
            )
            .contains("horse")
        );
    }

    #[test]
    fn user_ids() {
        let id = UserId::new();
        assert_eq!(UserId::parse(&id.to_string()).unwrap(), id);
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("not-a-uuid").is_err());
        // A v4 UUID is refused: ids must sort by creation time.
        assert!(UserId::parse("0b9a2f5e-3c57-4a4e-9d8e-2f0c1c9b4a11").is_err());
    }
}
