//! Keys and tokens: a signing key the services under test trust, tokens of
//! any role minted from it, and requests carrying them.

use std::time::Duration;

use agora_interceptors::auth::{KeySet, Role, SigningKey, TokenIssuer, TokenSettings};

/// A signing key with the matching verification key set, to mint tokens of any
/// role the way the user service would.
#[derive(Clone, Debug)]
pub struct TestKeys {
    /// The private key.
    pub signing: SigningKey,
    /// A key set trusting it.
    pub key_set: KeySet,
    /// Issuer and audience used.
    pub settings: TokenSettings,
    issuer: TokenIssuer,
}

impl TestKeys {
    /// A fresh random key.
    pub fn new() -> Self {
        let signing = SigningKey::generate("test-key").expect("key");
        let mut key_set = KeySet::new();
        key_set.insert(signing.public_jwk()).expect("jwk");
        let settings = TokenSettings::default();
        let issuer = TokenIssuer::new(&signing, settings.clone()).expect("issuer");
        Self {
            signing,
            key_set,
            settings,
            issuer,
        }
    }

    /// A token for `subject` with `role`, valid for an hour.
    pub fn token(&self, subject: &str, role: Role) -> String {
        self.issuer
            .issue(subject, role, Duration::from_secs(3600))
            .expect("token")
            .token
    }
}

impl Default for TestKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}
