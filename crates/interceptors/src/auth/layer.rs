//! The tower layer that authenticates and authorises every call before it
//! reaches a handler, and hands the handler a typed [`Principal`].

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::policy::{Access, Lookup, PolicyTable};
use super::principal::Principal;
use super::token::{AuthError, TokenVerifier};
use crate::api::errors::with_reason;

/// `ErrorInfo.reason` of a call without a usable token: none, not a bearer
/// token, or one that does not verify (signature, issuer, audience, key id,
/// not yet valid). Sign in (again) and send the new token.
pub const REASON_UNAUTHENTICATED: &str = "UNAUTHENTICATED";
/// `ErrorInfo.reason` of a call whose token has expired: sign in again.
pub const REASON_TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";
/// `ErrorInfo.reason` of a call whose token was revoked after it was issued
/// (account deleted or disabled, role changed, tokens revoked by an admin or
/// by the user): sign in again, if the account still may.
pub const REASON_TOKEN_REVOKED: &str = "TOKEN_REVOKED";
/// `ErrorInfo.reason` of a call the caller's role may not make (metadata
/// `role` and `method`), or of a method that declares no access rule.
pub const REASON_PERMISSION_DENIED: &str = "PERMISSION_DENIED";

/// Enforces a [`PolicyTable`] with a [`TokenVerifier`].
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: TokenVerifier,
    policies: Arc<PolicyTable>,
}

impl AuthLayer {
    /// A layer checking calls against `policies`.
    pub fn new(verifier: TokenVerifier, policies: PolicyTable) -> Self {
        Self {
            verifier,
            policies: Arc::new(policies),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            policies: self.policies.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    verifier: TokenVerifier,
    policies: Arc<PolicyTable>,
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.authorize(&request) {
            Ok(Some(principal)) => {
                request.extensions_mut().insert(principal);
            }
            Ok(None) => {}
            Err(status) => return Either::Left(ready(Ok(status.into_http()))),
        }
        Either::Right(self.inner.call(request))
    }
}

impl<S> AuthService<S> {
    /// The principal to hand the handler (none on public calls without a token),
    /// or the status refusing the call.
    fn authorize<B>(&self, request: &http::Request<B>) -> Result<Option<Principal>, Status> {
        let access = match self.policies.lookup(request.uri().path()) {
            Lookup::Rule(access) => access,
            Lookup::Undeclared => {
                return Err(with_reason(
                    Code::PermissionDenied,
                    REASON_PERMISSION_DENIED,
                    "no access rule is declared for this method",
                    [("method", request.uri().path().to_owned())],
                ));
            }
            Lookup::UnknownService => return Ok(None),
        };
        let verified = bearer_token(request).and_then(|token| self.verifier.verify(token));
        match (access, verified) {
            // A public call keeps a valid principal and ignores a bad token, so a
            // stale token in a client never breaks health checks or sign-in.
            (Access::Public, verified) => Ok(verified.ok()),
            (_, Err(error)) => Err(unauthenticated(&error)),
            (Access::Authenticated, Ok(principal)) => Ok(Some(principal)),
            (Access::Roles(roles), Ok(principal)) => {
                if roles.contains(&principal.role) {
                    Ok(Some(principal))
                } else {
                    Err(with_reason(
                        Code::PermissionDenied,
                        REASON_PERMISSION_DENIED,
                        format!("role {} may not call this method", principal.role),
                        [
                            ("role", principal.role.as_str().to_owned()),
                            ("method", request.uri().path().to_owned()),
                        ],
                    ))
                }
            }
        }
    }
}

/// UNAUTHENTICATED with the ErrorInfo reason a client can act on.
pub fn unauthenticated(error: &AuthError) -> Status {
    let reason = match error {
        AuthError::Expired => REASON_TOKEN_EXPIRED,
        AuthError::Revoked => REASON_TOKEN_REVOKED,
        AuthError::Missing | AuthError::Invalid(_) | AuthError::NotYetValid => {
            REASON_UNAUTHENTICATED
        }
    };
    with_reason(Code::Unauthenticated, reason, error.to_string(), [])
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer_token<B>(request: &http::Request<B>) -> Result<&str, AuthError> {
    let value = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("authorization is not text"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::Invalid("authorization is not a bearer token"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Invalid("authorization is not a bearer token"));
    }
    Ok(token)
}
