//! Ed25519 keys for access tokens.
//!
//! The user service signs with one private key (PKCS#8 PEM on disk, named by a
//! `kid`); every service verifies against a JSON Web Key Set that may hold several
//! public keys at once, so a new key can be rolled out before the old one retires.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

/// A private Ed25519 key that signs access tokens, with the key id put in each
/// token's header.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate(kid: impl Into<String>) -> anyhow::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(Self {
            kid: kid.into(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// Parses a PKCS#8 PEM private key (as written by [`SigningKey::to_pkcs8_pem`]
    /// or `openssl genpkey -algorithm ed25519`).
    pub fn from_pkcs8_pem(kid: impl Into<String>, pem: &str) -> anyhow::Result<Self> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| anyhow::anyhow!("not an Ed25519 PKCS#8 PEM private key: {e}"))?;
        Ok(Self {
            kid: kid.into(),
            key,
        })
    }

    /// Reads a PKCS#8 PEM private key from a file.
    pub fn from_file(kid: impl Into<String>, path: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading signing key {}", path.display()))?;
        Self::from_pkcs8_pem(kid, &pem).with_context(|| format!("in {}", path.display()))
    }

    /// The PKCS#8 PEM encoding of the private key, for writing to a secret
    /// store: version 1 (RFC 5208, private key only), exactly what `openssl
    /// genpkey -algorithm ed25519` writes and `openssl pkey` reads. (The
    /// version 2 form with the public key attached, which ed25519-dalek writes
    /// by default, OpenSSL refuses as "unsupported".)
    pub fn to_pkcs8_pem(&self) -> anyhow::Result<String> {
        let pem = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encoding key: {e}"))?;
        Ok(pem.to_string())
    }

    /// The key id tokens signed with this key carry.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key in the form jsonwebtoken signs with.
    pub(crate) fn encoding_key(&self) -> anyhow::Result<EncodingKey> {
        let der = self
            .key
            .to_pkcs8_der()
            .map_err(|e| anyhow::anyhow!("encoding key: {e}"))?;
        Ok(EncodingKey::from_ed_der(der.as_bytes()))
    }

    /// The public half, as a JWK for a key set.
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            alg: Some("EdDSA".into()),
            key_use: Some("sig".into()),
            kid: self.kid.clone(),
            x: URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes()),
        }
    }
}

/// One public key of a JSON Web Key Set (RFC 8037 OKP form). Only Ed25519
/// signature keys are accepted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: must be "OKP".
    pub kty: String,
    /// Curve: must be "Ed25519".
    pub crv: String,
    /// Algorithm, when given: must be "EdDSA".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use, when given: must be "sig".
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Key id, matched against the token header's `kid`.
    pub kid: String,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
}

#[derive(Serialize, Deserialize)]
struct JwksDocument {
    keys: Vec<Jwk>,
}

/// The public keys a verifier trusts, by key id.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
    jwks: Vec<Jwk>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeySet {
    /// An empty set: every token fails verification.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a public key. Keys that are not Ed25519 signature keys, or whose `x`
    /// is not 32 bytes, are refused here so verification never meets them.
    pub fn insert(&mut self, jwk: Jwk) -> anyhow::Result<()> {
        if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
            bail!("key {:?}: only OKP/Ed25519 keys are accepted", jwk.kid);
        }
        if jwk.alg.as_deref().is_some_and(|alg| alg != "EdDSA") {
            bail!("key {:?}: alg must be EdDSA", jwk.kid);
        }
        if jwk.key_use.as_deref().is_some_and(|u| u != "sig") {
            bail!("key {:?}: use must be sig", jwk.kid);
        }
        if jwk.kid.is_empty() {
            bail!("every key needs a kid");
        }
        let x = URL_SAFE_NO_PAD
            .decode(&jwk.x)
            .with_context(|| format!("key {:?}: x is not base64url", jwk.kid))?;
        let x: [u8; 32] = x
            .try_into()
            .map_err(|_| anyhow::anyhow!("key {:?}: x must be 32 bytes", jwk.kid))?;
        ed25519_dalek::VerifyingKey::from_bytes(&x)
            .map_err(|_| anyhow::anyhow!("key {:?}: not a valid Ed25519 point", jwk.kid))?;
        self.keys
            .insert(jwk.kid.clone(), DecodingKey::from_ed_der(&x));
        self.jwks.retain(|k| k.kid != jwk.kid);
        self.jwks.push(jwk);
        Ok(())
    }

    /// Adds every key of `other` (e.g. the next key during a rotation).
    pub fn merge(&mut self, other: &KeySet) -> anyhow::Result<()> {
        for jwk in &other.jwks {
            self.insert(jwk.clone())?;
        }
        Ok(())
    }

    /// Parses a JWKS document (`{"keys": [...]}`).
    pub fn from_jwks_json(json: &str) -> anyhow::Result<Self> {
        let document: JwksDocument = serde_json::from_str(json).context("parsing JWKS")?;
        let mut set = Self::new();
        for jwk in document.keys {
            set.insert(jwk)?;
        }
        Ok(set)
    }

    /// Reads a JWKS document from a file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let json = std::fs::read_to_string(path)
            .with_context(|| format!("reading JWKS {}", path.display()))?;
        Self::from_jwks_json(&json).with_context(|| format!("in {}", path.display()))
    }

    /// The set as a JWKS document.
    pub fn to_jwks_json(&self) -> String {
        serde_json::to_string_pretty(&JwksDocument {
            keys: self.jwks.clone(),
        })
        .unwrap_or_default()
    }

    /// The verification key for a key id.
    pub(crate) fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    /// True when the set trusts no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_is_the_form_openssl_reads() {
        let key = SigningKey::generate("k1").unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, &pem).unwrap();
        match std::process::Command::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(&path)
            .output()
        {
            Ok(out) => assert!(
                out.status.success(),
                "openssl pkey: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(error) => eprintln!("skipping the openssl check: {error}"),
        }
        // And a key openssl wrote reads back (the round trip is this form).
        let again = SigningKey::from_pkcs8_pem("k1", &pem).unwrap();
        assert_eq!(again.public_jwk().x, key.public_jwk().x);
    }

    #[test]
    fn pem_and_jwks_round_trip() {
        let key = SigningKey::generate("k1").unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        let again = SigningKey::from_pkcs8_pem("k1", &pem).unwrap();
        assert_eq!(again.public_jwk().x, key.public_jwk().x);

        let mut set = KeySet::new();
        set.insert(key.public_jwk()).unwrap();
        let parsed = KeySet::from_jwks_json(&set.to_jwks_json()).unwrap();
        assert!(parsed.get("k1").is_some());
        assert!(parsed.get("k2").is_none());
    }

    #[test]
    fn refuses_keys_that_are_not_ed25519() {
        let mut jwk = SigningKey::generate("k").unwrap().public_jwk();
        jwk.x = URL_SAFE_NO_PAD.encode([1u8; 16]);
        assert!(KeySet::new().insert(jwk.clone()).is_err());
        jwk.kty = "RSA".into();
        assert!(KeySet::new().insert(jwk).is_err());
    }
}

/// The keys of a service that calls others with `service`-role tokens of
/// its own (order, notification): the public keys it accepts on incoming
/// calls, and the key it signs its own tokens with, whose public half the
/// services it calls trust through their JWKS.
#[derive(Clone, Debug)]
pub struct ServiceKeys {
    /// Public keys accepted on incoming calls (the user service's, for
    /// customers' and admins' tokens).
    pub verifying: KeySet,
    /// The service's own key, signing the `service`-role tokens it sends.
    pub service: SigningKey,
}

impl ServiceKeys {
    /// `verifying`, and the signing key in `key_file` (PKCS#8 PEM) named
    /// `key_id`; without a file, an ephemeral key (with a warning), which only
    /// in-process callees handed its public half will trust. `callees` names
    /// them for that warning.
    pub fn load(
        key_file: Option<&Path>,
        key_id: &str,
        verifying: KeySet,
        callees: &str,
    ) -> anyhow::Result<Self> {
        let service = match key_file {
            Some(path) => SigningKey::from_file(key_id.to_owned(), path)?,
            None => {
                tracing::warn!(
                    "no AGORA_SERVICE_SIGNING_KEY_FILE: signing service tokens with a random key \
                     that dies with this process; {callees} will refuse them unless their JWKS \
                     lists its public key"
                );
                SigningKey::generate(key_id.to_owned())?
            }
        };
        Ok(Self { verifying, service })
    }

    /// `service`-role tokens with subject `subject`, signed with
    /// [`Self::service`], each valid for [`SERVICE_TOKEN_TTL`].
    pub fn tokens(
        &self,
        settings: super::TokenSettings,
        subject: &str,
    ) -> anyhow::Result<std::sync::Arc<crate::client::ServiceTokens>> {
        Ok(std::sync::Arc::new(crate::client::ServiceTokens::new(
            &self.service,
            settings,
            subject,
            SERVICE_TOKEN_TTL,
        )?))
    }
}

/// Lifetime of the service tokens [`ServiceKeys::tokens`] signs; a new one is
/// signed when a third is left.
pub const SERVICE_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(300);
