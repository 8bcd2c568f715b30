//! Credentials on outgoing calls: an `authorization: Bearer …` header from a
//! [`BearerSource`], added by [`DownstreamBuilder::bearer`](super::DownstreamBuilder::bearer).
//!
//! Service-to-service calls carry a `service`-role JWT. A service that calls
//! others holds its own Ed25519 key (the downstreams trust its public half
//! through their JWKS) and mints short-lived tokens with [`ServiceTokens`],
//! which re-signs one before it gets close to expiry, so a long-running
//! process never sends a stale token and never signs one per call.
//!
//! The header is set once per logical call, above retries, and a header the
//! caller set itself (a token forwarded on purpose) is left alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use tower::{Layer, Service};

use super::BoxError;
use crate::auth::{Role, SigningKey, TokenIssuer, TokenSettings};

type Response = http::Response<tonic::body::Body>;

/// Something that hands out the bearer token to send on a call.
pub trait BearerSource: std::fmt::Debug + Send + Sync + 'static {
    /// The token (without the `Bearer ` prefix) for the next call.
    fn bearer(&self) -> Result<String, BoxError>;
}

/// A fixed token, for tests and tools.
#[derive(Clone)]
pub struct StaticBearer(pub String);

impl std::fmt::Debug for StaticBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.write_str("StaticBearer(..)")
    }
}

impl BearerSource for StaticBearer {
    fn bearer(&self) -> Result<String, BoxError> {
        Ok(self.0.clone())
    }
}

/// `service`-role tokens for one calling service, signed with its own key and
/// renewed once less than a third of their lifetime is left.
pub struct ServiceTokens {
    issuer: TokenIssuer,
    subject: String,
    ttl: Duration,
    current: Mutex<Option<(String, SystemTime)>>,
}

impl std::fmt::Debug for ServiceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTokens")
            .field("subject", &self.subject)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl ServiceTokens {
    /// Tokens with subject `subject` (the service's name, e.g. `agora-order`),
    /// signed with `key`, each valid for `ttl`.
    pub fn new(
        key: &SigningKey,
        settings: TokenSettings,
        subject: impl Into<String>,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            ttl >= Duration::from_secs(3),
            "service tokens must live at least 3 s"
        );
        Ok(Self {
            issuer: TokenIssuer::new(key, settings)?,
            subject: subject.into(),
            ttl,
            current: Mutex::new(None),
        })
    }
}

impl BearerSource for ServiceTokens {
    fn bearer(&self) -> Result<String, BoxError> {
        let now = SystemTime::now();
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, expires_at)) = current.as_ref()
            && expires_at
                .duration_since(now)
                .is_ok_and(|left| left > self.ttl / 3)
        {
            return Ok(token.clone());
        }
        let issued = self
            .issuer
            .issue(&self.subject, Role::Service, self.ttl)
            .map_err(|e| -> BoxError { e.into() })?;
        *current = Some((issued.token.clone(), issued.expires_at));
        Ok(issued.token)
    }
}

/// Adds `authorization: Bearer <token>` to calls that carry none.
#[derive(Clone)]
pub struct CredentialsLayer {
    source: Arc<dyn BearerSource>,
}

impl std::fmt::Debug for CredentialsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsLayer").finish_non_exhaustive()
    }
}

impl CredentialsLayer {
    /// A layer taking tokens from `source`.
    pub fn new(source: Arc<dyn BearerSource>) -> Self {
        Self { source }
    }
}

impl<S> Layer<S> for CredentialsLayer {
    type Service = CredentialsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CredentialsService {
            inner,
            source: self.source.clone(),
        }
    }
}

/// The service [`CredentialsLayer`] wraps.
#[derive(Clone)]
pub struct CredentialsService<S> {
    inner: S,
    source: Arc<dyn BearerSource>,
}

impl<S> std::fmt::Debug for CredentialsService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsService").finish_non_exhaustive()
    }
}

impl<S> Service<http::Request<tonic::body::Body>> for CredentialsService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = Response, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if !request.headers().contains_key(http::header::AUTHORIZATION) {
            let header = self
                .source
                .bearer()
                .ok()
                .and_then(|token| HeaderValue::from_str(&format!("Bearer {token}")).ok());
            match header {
                Some(mut value) => {
                    value.set_sensitive(true);
                    request
                        .headers_mut()
                        .insert(http::header::AUTHORIZATION, value);
                }
                None => {
                    tracing::error!("no credentials for a downstream call");
                    let status = tonic::Status::unauthenticated(
                        "the caller could not produce credentials for this call",
                    );
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{KeySet, TokenVerifier};

    #[test]
    fn service_tokens_verify_as_the_service_role_and_are_reused() {
        let key = SigningKey::generate("svc").unwrap();
        let tokens = ServiceTokens::new(
            &key,
            TokenSettings::default(),
            "agora-order",
            Duration::from_secs(300),
        )
        .unwrap();
        let first = tokens.bearer().unwrap();
        assert_eq!(first, tokens.bearer().unwrap(), "fresh token reused");

        let mut keys = KeySet::new();
        keys.insert(key.public_jwk()).unwrap();
        let principal = TokenVerifier::new(keys, &TokenSettings::default())
            .verify(&first)
            .unwrap();
        assert_eq!(principal.subject, "agora-order");
        assert_eq!(principal.role, Role::Service);
    }

    #[test]
    fn a_token_near_expiry_is_replaced() {
        let key = SigningKey::generate("svc").unwrap();
        let tokens = ServiceTokens::new(
            &key,
            TokenSettings::default(),
            "agora-order",
            Duration::from_secs(300),
        )
        .unwrap();
        let first = tokens.bearer().unwrap();
        // Pretend the token is about to expire.
        *tokens.current.lock().unwrap() = Some((first.clone(), SystemTime::now()));
        assert_ne!(tokens.bearer().unwrap(), first);
    }
}
