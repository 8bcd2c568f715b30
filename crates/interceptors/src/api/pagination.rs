//! AIP-158 keyset pagination: page sizes and opaque page tokens.
//!
//! A page token names the last key of the previous page (never an OFFSET, so pages
//! stay stable and cheap however deep a client goes) and a fingerprint of the
//! request's filters, so a token cannot be replayed against a different query.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::errors::invalid_field;
use super::values::ParseError;

/// Page size used when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size served; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Turns a request's `page_size` into the number of rows to return: 0 means the
/// default, too large is clamped, negative is refused.
pub fn page_size(requested: i32) -> Result<u32, ParseError> {
    match requested {
        n if n < 0 => Err(ParseError::new("must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as u32).min(MAX_PAGE_SIZE)),
    }
}

/// One page of a list method (AIP-158): how many rows, after which key, for
/// which filters. Every list method reads its page the same way:
///
/// ```text
/// let page = PageRequest::parse(body.page_size, &body.page_token, filters)?;
/// let rows = store.list(filter, page.after(), page.fetch_limit()).await?;
/// let (rows, next_page_token) = page.split(rows, |row| row.id.to_string());
/// ```
#[derive(Clone, Debug)]
pub struct PageRequest {
    limit: u32,
    after: Option<String>,
    filters: String,
}

impl PageRequest {
    /// Reads `page_size` and `page_token`; `filters` fingerprints the query
    /// (a token only continues the query it was issued for).
    pub fn parse(
        page_size: i32,
        page_token: &str,
        filters: impl Into<String>,
    ) -> Result<Self, Status> {
        let limit =
            self::page_size(page_size).map_err(|e| invalid_field("page_size", e.message()))?;
        Self::new(limit, page_token, filters)
    }

    /// As [`Self::parse`], with the page size already read (as a field
    /// violation among the request's others, say).
    pub fn new(limit: u32, page_token: &str, filters: impl Into<String>) -> Result<Self, Status> {
        let filters = filters.into();
        let after = decode_token(page_token, &filters)?;
        Ok(Self {
            limit,
            after,
            filters,
        })
    }

    /// The key the page starts after; `None` for the first page.
    pub fn after(&self) -> Option<&str> {
        self.after.as_deref()
    }

    /// How many rows to fetch: one more than the page, the extra one only
    /// telling whether another page follows.
    pub fn fetch_limit(&self) -> u32 {
        self.limit + 1
    }

    /// The page out of rows fetched with [`Self::fetch_limit`], and the token
    /// of the next page (empty after the last). `key` is the keyset key
    /// each row sorts by.
    pub fn split<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
        if rows.len() <= self.limit as usize {
            return (rows, String::new());
        }
        rows.truncate(self.limit as usize);
        let next = rows
            .last()
            .map(|last| encode_token(&key(last), &self.filters))
            .unwrap_or_default();
        (rows, next)
    }
}

#[derive(Serialize, Deserialize)]
struct TokenBody {
    /// Last key of the previous page.
    k: String,
    /// Fingerprint of the filters the token was issued for.
    f: String,
}

/// Encodes the key of the last row served and the query's filter fingerprint.
fn encode_token(last_key: &str, filters: &str) -> String {
    let body = TokenBody {
        k: last_key.to_owned(),
        f: filters.to_owned(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).unwrap_or_default())
}

/// Decodes a page token: `Ok(None)` for the first page, the last key otherwise.
/// A malformed token, or one issued for other filters, is INVALID_ARGUMENT.
fn decode_token(token: &str, filters: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || invalid_field("page_token", "is not a token this list method issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let body: TokenBody = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if body.f != filters {
        return Err(invalid_field(
            "page_token",
            "was issued for a request with different filters",
        ));
    }
    Ok(Some(body.k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_rules() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(i32::MAX).unwrap(), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
        assert_eq!(
            PageRequest::parse(-1, "", "").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_filters() {
        let token = encode_token("0190-abc", "user=1");
        assert_eq!(
            decode_token(&token, "user=1").unwrap().as_deref(),
            Some("0190-abc")
        );
        assert!(decode_token(&token, "user=2").is_err());
        assert!(decode_token("not base64!", "").is_err());
        assert_eq!(decode_token("", "x").unwrap(), None);
    }

    #[test]
    fn pages_end_where_the_rows_do() {
        let page = PageRequest::parse(2, "", "f").unwrap();
        assert_eq!(page.fetch_limit(), 3);
        let (rows, next) = page.split(vec![1, 2, 3], |n| n.to_string());
        assert_eq!(rows, [1, 2]);
        let following = PageRequest::parse(2, &next, "f").unwrap();
        assert_eq!(following.after(), Some("2"));
        assert!(PageRequest::parse(2, &next, "g").is_err());
        let (rows, next) = following.split(vec![3], |n| n.to_string());
        assert_eq!((rows, next.as_str()), (vec![3], ""));
    }
}
