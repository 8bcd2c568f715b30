//! AIP-158 keyset pagination: page sizes and opaque page tokens.
//!
//! A page token names the last key of the previous page (never an OFFSET, so
//! pages stay stable and cheap however deep a client goes), sealed with an
//! HMAC-SHA256 over the list method, the request's filters and that key. A
//! token is therefore tamper-evident and bound to its query: a hand-made one,
//! an edited one, or one issued by another method or for other filters is
//! INVALID_ARGUMENT (field violation `page_token`) before any key in it is
//! used. The secret is `AGORA_PAGE_TOKEN_SECRET` when set ([`set_secret`],
//! called by the host); otherwise a random one per process, so tokens then
//! last as long as the process (set the secret when replicas share traffic).

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
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
    /// The method and filters a token of this query is sealed to.
    scope: String,
}

/// The key page tokens are sealed with.
static SECRET: OnceLock<hmac::Key> = OnceLock::new();

/// Seals page tokens with `secret` from now on (the same in every replica
/// serving the same lists). Only the first call counts; tokens sealed before
/// it (with a random key) stop verifying.
pub fn set_secret(secret: &[u8]) {
    let _ = SECRET.set(hmac::Key::new(hmac::HMAC_SHA256, secret));
}

fn secret() -> &'static hmac::Key {
    SECRET.get_or_init(|| {
        let mut random = [0u8; 32];
        // Without randomness, a key no caller can know either way: the
        // process's address-space layout and the time.
        if getrandom::fill(&mut random).is_err() {
            let fallback = format!("{:p}{:?}", &random, std::time::SystemTime::now());
            random[..fallback.len().min(32)]
                .copy_from_slice(&fallback.as_bytes()[..fallback.len().min(32)]);
        }
        hmac::Key::new(hmac::HMAC_SHA256, &random)
    })
}

impl PageRequest {
    /// Reads `page_size` and `page_token` of a call to `method` (its full
    /// name, e.g. `agora.user.v1.UserService/ListUsers`); `filters`
    /// fingerprints the query (a token only continues the method and query
    /// it was issued for).
    pub fn parse(
        method: &str,
        page_size: i32,
        page_token: &str,
        filters: impl AsRef<str>,
    ) -> Result<Self, Status> {
        let limit =
            self::page_size(page_size).map_err(|e| invalid_field("page_size", e.message()))?;
        Self::new(method, limit, page_token, filters)
    }

    /// As [`Self::parse`], with the page size already read (as a field
    /// violation among the request's others, say).
    pub fn new(
        method: &str,
        limit: u32,
        page_token: &str,
        filters: impl AsRef<str>,
    ) -> Result<Self, Status> {
        let scope = format!("{method}\n{}", filters.as_ref());
        let after = decode_token(page_token, &scope)?;
        Ok(Self {
            limit,
            after,
            scope,
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
            .map(|last| encode_token(&key(last), &self.scope))
            .unwrap_or_default();
        (rows, next)
    }
}

/// The MAC of a token for `scope` continuing after `last_key`.
fn seal(last_key: &str, scope: &str) -> hmac::Tag {
    let mut context = hmac::Context::with_key(secret());
    context.update(scope.as_bytes());
    context.update(b"\n");
    context.update(last_key.as_bytes());
    context.sign()
}

/// The token continuing after `last_key`: the key and its seal, base64url.
fn encode_token(last_key: &str, scope: &str) -> String {
    let tag = seal(last_key, scope);
    let mut bytes = Vec::with_capacity(last_key.len() + tag.as_ref().len());
    bytes.extend_from_slice(tag.as_ref());
    bytes.extend_from_slice(last_key.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a page token: `Ok(None)` for the first page, the last key otherwise.
/// A malformed token, a forged or edited one, or one issued for another
/// method or other filters is INVALID_ARGUMENT.
fn decode_token(token: &str, scope: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        invalid_field(
            "page_token",
            "is not a token this list method issued for these filters",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let tag_len = hmac::HMAC_SHA256.digest_algorithm().output_len();
    if bytes.len() < tag_len {
        return Err(bad());
    }
    let (tag, key) = bytes.split_at(tag_len);
    let mut message = Vec::with_capacity(scope.len() + 1 + key.len());
    message.extend_from_slice(scope.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(key);
    hmac::verify(secret(), &message, tag).map_err(|_| bad())?;
    let key = String::from_utf8(key.to_vec()).map_err(|_| bad())?;
    Ok(Some(key))
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
            PageRequest::parse("m", -1, "", "").unwrap_err().code(),
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
    fn forged_edited_and_swapped_tokens_are_refused() {
        // Hand-made: the old unsigned form.
        let forged = URL_SAFE_NO_PAD.encode(br#"{"k":"0190-abc","f":""}"#);
        assert!(PageRequest::parse("a/List", 10, &forged, "").is_err());
        // Edited: one byte of the key changed.
        let page = PageRequest::parse("a/List", 1, "", "").unwrap();
        let (_, token) = page.split(vec![1, 2], |n| n.to_string());
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let edited = URL_SAFE_NO_PAD.encode(bytes);
        assert!(PageRequest::parse("a/List", 1, &edited, "").is_err());
        // Swapped: valid for another method, or other filters.
        assert_eq!(
            PageRequest::parse("a/List", 1, &token, "").unwrap().after(),
            Some("1")
        );
        let status = PageRequest::parse("b/List", 1, &token, "").unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(PageRequest::parse("a/List", 1, &token, "user=2").is_err());
    }

    #[test]
    fn pages_end_where_the_rows_do() {
        let page = PageRequest::parse("m", 2, "", "f").unwrap();
        assert_eq!(page.fetch_limit(), 3);
        let (rows, next) = page.split(vec![1, 2, 3], |n| n.to_string());
        assert_eq!(rows, [1, 2]);
        let following = PageRequest::parse("m", 2, &next, "f").unwrap();
        assert_eq!(following.after(), Some("2"));
        assert!(PageRequest::parse("m", 2, &next, "g").is_err());
        let (rows, next) = following.split(vec![3], |n| n.to_string());
        assert_eq!((rows, next.as_str()), (vec![3], ""));
    }
}
