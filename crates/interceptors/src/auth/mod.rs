//! Who is calling, and may they call this method.
//!
//! - [`keys`]: Ed25519 signing keys and the JWKS of public keys verifiers trust.
//! - [`token`]: issuing (user service only) and verifying access tokens.
//! - [`principal`]: the verified caller as handlers see it.
//! - [`policy`]: the per-method access rules each service declares.
//! - [`layer`]: the tower layer that enforces the rules before a handler runs.
//! - [`revocations`]: subjects whose earlier tokens are refused, and the loop
//!   that follows a list of them; [`user_feed`]: that list read from the
//!   user service.

pub mod keys;
pub mod layer;
pub mod policy;
pub mod principal;
pub mod revocations;
pub mod token;
pub mod user_feed;

pub use keys::{KeySet, ServiceKeys, SigningKey};
pub use layer::AuthLayer;
pub use policy::{Access, ServicePolicy};
pub use principal::{Principal, Role};
pub use revocations::{Revocation, RevocationBatch, RevocationFeed, Revocations};
pub use token::{AuthError, Claims, IssuedToken, TokenIssuer, TokenSettings, TokenVerifier};
