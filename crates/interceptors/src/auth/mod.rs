//! Who is calling, and may they call this method.
//!
//! - [`keys`]: Ed25519 signing keys and the JWKS of public keys verifiers trust.
//! - [`token`]: issuing (user service only) and verifying access tokens.
//! - [`principal`]: the verified caller as handlers see it.
//! - [`policy`]: the per-method access rules each service declares.
//! - [`layer`]: the tower layer that enforces the rules before a handler runs.

pub mod keys;
pub mod layer;
pub mod policy;
pub mod principal;
pub mod token;

pub use keys::{KeySet, ServiceKeys, SigningKey};
pub use layer::AuthLayer;
pub use policy::{Access, ServicePolicy};
pub use principal::{Principal, Role};
pub use token::{AuthError, Claims, IssuedToken, TokenIssuer, TokenSettings, TokenVerifier};
