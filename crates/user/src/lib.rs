//! Agora's user context: registration, profiles, and sign-in with argon2id
//! password hashes and EdDSA-signed access tokens.
//!
//! - [`domain`]: parsed value types (ids, emails, names, passwords).
//! - [`store`]: the `users` table; [`events`]: UserRegistered and UserDeleted
//!   in their wire form, written to the outbox by the store.
//! - [`grpc`]: the `agora.user.v1.UserService` adapter and its access policy.
//! - [`revocations`]: the revoked tokens, as this service follows them.
//! - [`seed`]: accounts made at start-up (a first admin, demo accounts).
//! - [`config`]: flags and environment variables.
#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod password;
pub mod revocations;
pub mod seed;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use agora_interceptors::auth::{KeySet, SigningKey, TokenIssuer, TokenVerifier};
use agora_interceptors::binary::{ServiceBinary, Settings, Shutdown};
use agora_interceptors::db::Migrations;
use agora_interceptors::{ServiceHost, grpc_server};
use anyhow::Context;
use tokio::net::TcpListener;

pub use config::UserConfig;

/// The user service's schema, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: sqlx::migrate!("../../migrations/user/sqlite"),
    postgres: sqlx::migrate!("../../migrations/user/postgres"),
};

/// The keys the user service works with.
#[derive(Clone, Debug)]
pub struct UserKeys {
    /// Signs the tokens Authenticate hands out.
    pub signing: SigningKey,
    /// Public keys accepted on incoming calls; always includes `signing`'s.
    pub verifying: KeySet,
}

impl UserKeys {
    /// Loads the keys named in `config`, or makes an ephemeral signing key when
    /// none is configured.
    pub fn load(config: &UserConfig) -> anyhow::Result<Self> {
        let signing = match &config.jwt_signing_key_file {
            Some(path) => SigningKey::from_file(config.jwt_signing_key_id.clone(), path)?,
            None => {
                tracing::warn!(
                    "no AGORA_JWT_SIGNING_KEY_FILE: signing with a random key that dies with this process"
                );
                SigningKey::generate(config.jwt_signing_key_id.clone())?
            }
        };
        Ok(Self::with_verifying(signing, config.serve.key_set()?))
    }

    /// `signing` plus the extra public keys in `verifying`.
    pub fn with_verifying(signing: SigningKey, mut verifying: KeySet) -> Self {
        // The key we sign with is always one we accept; inserting it can only fail
        // for keys that are not Ed25519, and ours is.
        let _ = verifying.insert(signing.public_jwk());
        Self { signing, verifying }
    }
}

/// Serves the user service on `listener` until `shutdown` resolves.
pub async fn serve(
    config: UserConfig,
    keys: UserKeys,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let database = config.database.open("user", &MIGRATIONS).await?;
    let store = store::UserStore::new(database.clone());
    let outbox = store.outbox().clone();
    for account in config.all_seed_accounts()? {
        seed::ensure(&store, &account).await?;
    }
    let token_settings = config.serve.token_settings();
    let issuer = TokenIssuer::new(&keys.signing, token_settings.clone())?;
    let verifier = TokenVerifier::new(keys.verifying, &token_settings);
    let api = grpc::UserApi::new(
        store.clone(),
        issuer,
        config.access_token_ttl,
        verifier.revocations().clone(),
    )
    .await
    .context("starting the user service")?;
    let lifetime = api.token_lifetime();
    let feed = revocations::StoreFeed::new(store.clone(), lifetime);
    ServiceHost::new(config.serve.clone(), verifier)
        .add_service(
            grpc_server!(grpc::Server::new(api), config.serve),
            &grpc::POLICY,
        )
        .revocations(Arc::new(feed))
        .background("revocation retention", move |stop| {
            revocations::prune_every_minute(store, lifetime, stop)
        })
        .outbox(outbox)
        .database(database)
        .serve(listener, shutdown)
        .await
}

impl ServiceBinary for UserConfig {
    const BINARY: &'static str = "agora-user";
    const SERVICE: &'static str = "user";

    const MIGRATIONS: &'static Migrations = &MIGRATIONS;

    fn settings(&self) -> Settings<'_> {
        Settings {
            listen: self.listen,
            serve: &self.serve,
            database: &self.database,
        }
    }

    async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let keys = UserKeys::load(&self)?;
        serve(self, keys, listener, shutdown).await
    }
}
