//! Access tokens: EdDSA-signed JWTs.
//!
//! Verification pins the algorithm to EdDSA (so `alg: none` and HS256-with-the-
//! public-key tricks fail), picks the key by `kid`, and checks `exp`, `nbf`, `iss`
//! and `aud` with a small leeway for clock skew. Ed25519 verification costs tens
//! of microseconds, several times a bare RPC, so verified tokens are cached by
//! their exact bytes until they expire: a hit proves the same signed token was
//! verified before, and the time claims are re-checked on every hit, as is
//! the token's revocation ([`Revocations`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::{KeySet, SigningKey};
use super::principal::{Principal, Role};
use super::revocations::Revocations;

/// Who issues tokens and who they are for; shared by issuer and verifiers.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    /// The `iss` claim: who signed the token.
    pub issuer: String,
    /// The `aud` claim: which system the token is good for.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: "agora".into(),
            audience: "agora".into(),
            leeway: Duration::from_secs(30),
        }
    }
}

/// The claims of an Agora access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user id, or the service name for service tokens.
    pub sub: String,
    /// The caller's role: "customer", "admin" or "service".
    pub role: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not valid before, seconds since the epoch.
    pub nbf: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Unique token id.
    pub jti: String,
}

/// A token just signed.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The compact JWS to send as `authorization: Bearer <token>`.
    pub token: String,
    /// When it stops being accepted.
    pub expires_at: SystemTime,
}

/// Signs access tokens. Only the user service (and the developer CLI with the
/// development key) holds one.
#[derive(Clone)]
pub struct TokenIssuer {
    kid: String,
    key: EncodingKey,
    settings: TokenSettings,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer signing with `key`.
    pub fn new(key: &SigningKey, settings: TokenSettings) -> anyhow::Result<Self> {
        Ok(Self {
            kid: key.kid().to_owned(),
            key: key.encoding_key()?,
            settings,
        })
    }

    /// Signs a token for `subject` with `role`, valid from now for `ttl`.
    pub fn issue(&self, subject: &str, role: Role, ttl: Duration) -> anyhow::Result<IssuedToken> {
        self.issue_after(subject, role, ttl, None)
    }

    /// [`Self::issue`] for a subject whose tokens are revoked through second
    /// `revoked_through` (see [`Revocations`]): a token signed in that very
    /// second is stamped `iat` = the next second, so it is not refused as one
    /// of the tokens revoked (`iat` has one-second resolution).
    pub fn issue_after(
        &self,
        subject: &str,
        role: Role,
        ttl: Duration,
        revoked_through: Option<u64>,
    ) -> anyhow::Result<IssuedToken> {
        let now = SystemTime::now();
        let nbf = unix_seconds(now);
        let iat = revoked_through.map_or(nbf, |second| nbf.max(second.saturating_add(1)));
        let expires_at = now + ttl;
        let claims = Claims {
            sub: subject.to_owned(),
            role: role.as_str().to_owned(),
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            exp: unix_seconds(expires_at),
            nbf,
            iat,
            jti: uuid::Uuid::now_v7().to_string(),
        };
        let token = self.sign(&claims)?;
        Ok(IssuedToken { token, expires_at })
    }

    /// Issuer, audience and leeway of the tokens this issuer signs.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Signs arbitrary claims as they are, with this issuer's key and `kid`: for
    /// tools and tests that need tokens `issue` would never make (expired ones,
    /// other audiences).
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }
}

/// Why a token was refused. The message is safe to show the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `authorization: Bearer …` metadata.
    #[error("missing bearer token")]
    Missing,
    /// Not a well-formed JWT, a bad signature, or a claim that does not check out.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// The token expired.
    #[error("token expired")]
    Expired,
    /// The token is not valid yet.
    #[error("token not yet valid")]
    NotYetValid,
    /// The token's subject was revoked after it was issued (account deleted
    /// or disabled, role changed, or its tokens revoked): sign in again.
    #[error("token revoked")]
    Revoked,
}

/// How many verified tokens to remember. Each entry is small; past this the cache
/// is cleared of expired entries, then emptied if still full.
const CACHE_CAPACITY: usize = 10_000;

type TokenCache = HashMap<CacheKey, CachedToken, foldhash::fast::RandomState>;

/// The last bytes of a token: part of its Ed25519 signature, which differs
/// between any two tokens, so a short key that is cheap to hash. The entry
/// keeps the whole token and a hit must match it exactly; only tokens whose
/// signature verified are ever inserted.
type CacheKey = [u8; 32];

fn cache_key(token: &str) -> CacheKey {
    let bytes = token.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(32)..];
    let mut key = [0; 32];
    key[..tail.len()].copy_from_slice(tail);
    key
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    principal: Principal,
    exp: u64,
    nbf: u64,
    iat: u64,
}

/// A token's time claims, seconds since the epoch.
#[derive(Clone, Copy)]
struct Times {
    exp: u64,
    nbf: u64,
    iat: u64,
}

/// Verifies access tokens against a key set.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<KeySet>,
    validation: Arc<Validation>,
    leeway: u64,
    /// Verified tokens by [`cache_key`]. Hashing a whole token (a few hundred
    /// bytes) with SipHash was the layers' largest single cost per call.
    cache: Arc<Mutex<TokenCache>>,
    /// Subjects whose earlier tokens are refused, checked on every call.
    revocations: Revocations,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier trusting `keys`, for tokens issued under `settings`.
    pub fn new(keys: KeySet, settings: &TokenSettings) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_audience(&[&settings.audience]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = settings.leeway.as_secs();
        Self {
            keys: Arc::new(keys),
            validation: Arc::new(validation),
            leeway: settings.leeway.as_secs(),
            cache: Arc::new(Mutex::new(TokenCache::default())),
            revocations: Revocations::new(),
        }
    }

    /// The revocations this verifier (and every clone) refuses; fed by
    /// [`super::revocations::follow`].
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// The verified caller a token speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let now = unix_seconds(SystemTime::now());
        if let Some((principal, times)) = self.cached(token) {
            self.check_times(times.exp, times.nbf, now)?;
            return self.check_revoked(principal, times.iat);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid("algorithm not accepted"));
        }
        let kid = header
            .kid
            .ok_or(AuthError::Invalid("token has no key id"))?;
        let key = self
            .keys
            .get(&kid)
            .ok_or(AuthError::Invalid("unknown key id"))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience"),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer"),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
                ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("missing claim"),
                _ => AuthError::Invalid("malformed token"),
            }
        })?;
        let claims = data.claims;
        let role = Role::parse(&claims.role).ok_or(AuthError::Invalid("unknown role"))?;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty subject"));
        }
        let principal = Principal {
            subject: claims.sub,
            role,
        };
        let times = Times {
            exp: claims.exp,
            nbf: claims.nbf,
            iat: claims.iat,
        };
        self.remember(token, &principal, times, now);
        self.check_revoked(principal, claims.iat)
    }

    fn check_revoked(&self, principal: Principal, iat: u64) -> Result<Principal, AuthError> {
        if self.revocations.is_revoked(&principal.subject, iat) {
            return Err(AuthError::Revoked);
        }
        Ok(principal)
    }

    fn check_times(&self, exp: u64, nbf: u64, now: u64) -> Result<(), AuthError> {
        if now > exp.saturating_add(self.leeway) {
            return Err(AuthError::Expired);
        }
        if now.saturating_add(self.leeway) < nbf {
            return Err(AuthError::NotYetValid);
        }
        Ok(())
    }

    /// The cached principal of `token` and its time claims.
    fn cached(&self, token: &str) -> Option<(Principal, Times)> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(&cache_key(token))
            .filter(|entry| entry.token == token)
            .map(|entry| {
                (
                    entry.principal.clone(),
                    Times {
                        exp: entry.exp,
                        nbf: entry.nbf,
                        iat: entry.iat,
                    },
                )
            })
    }

    fn remember(&self, token: &str, principal: &Principal, times: Times, now: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, entry| entry.exp.saturating_add(self.leeway) >= now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(
            cache_key(token),
            CachedToken {
                token: token.to_owned(),
                principal: principal.clone(),
                exp: times.exp,
                nbf: times.nbf,
                iat: times.iat,
            },
        );
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
