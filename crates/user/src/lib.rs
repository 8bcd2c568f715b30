//! Agora's user context: registration, profiles, and sign-in with argon2id
//! password hashes and EdDSA-signed access tokens.
//!
//! - [`domain`]: parsed value types (ids, emails, names, passwords).
//! - [`store`]: the `users` table.
//! - [`grpc`]: the `agora.user.v1.UserService` adapter and its access policy.
//! - [`seed`]: accounts made at start-up (a first admin, demo accounts).
//! - [`config`]: flags and environment variables.
#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod password;
pub mod seed;
pub mod store;

use std::future::Future;

use agora_interceptors::ServiceHost;
use agora_interceptors::auth::{KeySet, SigningKey, TokenIssuer, TokenVerifier};
use agora_interceptors::db::{Database, PoolSettings};
use agora_proto::user::v1::user_service_server::UserServiceServer;
use anyhow::Context;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

pub use config::UserConfig;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/user/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/user/postgres");

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

/// Connects to the database and applies pending migrations.
pub async fn open_database(config: &UserConfig) -> anyhow::Result<Database> {
    let settings = PoolSettings {
        max_connections: config.db_max_connections,
        ..PoolSettings::default()
    };
    let database = Database::connect(&config.database_url, &settings).await?;
    database
        .migrate(&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS)
        .await?;
    Ok(database)
}

/// Serves the user service on `listener` until `shutdown` resolves.
pub async fn serve(
    config: UserConfig,
    keys: UserKeys,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let database = open_database(&config).await?;
    let store = store::UserStore::new(database.clone());
    for account in config.all_seed_accounts()? {
        seed::ensure(&store, &account).await?;
    }
    let token_settings = config.serve.token_settings();
    let issuer = TokenIssuer::new(&keys.signing, token_settings.clone())?;
    let verifier = TokenVerifier::new(keys.verifying, &token_settings);
    let api = grpc::UserApi::new(store, issuer, config.access_token_ttl)
        .await
        .context("starting the user service")?;

    let metrics_listener = config.serve.bind_metrics().await?;
    let mut host = ServiceHost::new(config.serve.clone(), verifier)
        .add_service(
            UserServiceServer::new(api).max_decoding_message_size(config.serve.max_request_bytes),
            &grpc::POLICY,
        )
        .readiness(database.clone());
    if let Some(listener) = metrics_listener {
        host = host.metrics(listener);
    }
    let result = host.serve(listener, shutdown).await;
    database.close().await;
    result
}
