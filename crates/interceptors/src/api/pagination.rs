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

/// Page size used when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size served; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Turns a request's `page_size` into the number of rows to return: 0 means the
/// default, too large is clamped, negative is INVALID_ARGUMENT.
pub fn page_size(requested: i32) -> Result<u32, Status> {
    match requested {
        n if n < 0 => Err(invalid_field("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as u32).min(MAX_PAGE_SIZE)),
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
pub fn encode_token(last_key: &str, filters: &str) -> String {
    let body = TokenBody {
        k: last_key.to_owned(),
        f: filters.to_owned(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).unwrap_or_default())
}

/// Decodes a page token: `Ok(None)` for the first page, the last key otherwise.
/// A malformed token, or one issued for other filters, is INVALID_ARGUMENT.
pub fn decode_token(token: &str, filters: &str) -> Result<Option<String>, Status> {
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
        assert_eq!(
            page_size(-1).unwrap_err().code(),
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
}
