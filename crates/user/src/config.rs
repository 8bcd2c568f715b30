//! Settings of the user service. Every field is a flag and an environment
//! variable; `agora-user --help` lists them with these comments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agora_interceptors::ServeArgs;
use agora_interceptors::auth::Role;
use agora_interceptors::db::DatabaseArgs;
use anyhow::Context;

use crate::seed::SeedAccount;

/// The user service: accounts, passwords and access tokens.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "agora-user", version, about)]
pub struct UserConfig {
    /// Address the gRPC server listens on.
    #[arg(long, env = "AGORA_USER_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// PKCS#8 PEM file with the Ed25519 private key that signs access tokens.
    /// Unset: a random key is made at start-up (tokens then die with the process
    /// and only this process trusts them; fine for trying things, not for
    /// production).
    #[arg(long, env = "AGORA_JWT_SIGNING_KEY_FILE")]
    pub jwt_signing_key_file: Option<PathBuf>,

    /// Key id (`kid`) written into tokens signed with that key; the JWKS that
    /// verifiers load must list the public key under the same id.
    #[arg(long, env = "AGORA_JWT_SIGNING_KEY_ID", default_value = "agora-dev")]
    pub jwt_signing_key_id: String,

    /// How long an access token from Authenticate is accepted (e.g. "1h").
    #[arg(long, env = "AGORA_ACCESS_TOKEN_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,

    /// Email of an admin account to make at start-up if no account has it
    /// yet (a deployment's first admin). Needs the password file too.
    #[arg(
        long,
        env = "AGORA_BOOTSTRAP_ADMIN_EMAIL",
        requires = "bootstrap_admin_password_file"
    )]
    pub bootstrap_admin_email: Option<String>,

    /// File holding that admin's password (a mounted Secret, say); a final
    /// newline is ignored.
    #[arg(
        long,
        env = "AGORA_BOOTSTRAP_ADMIN_PASSWORD_FILE",
        requires = "bootstrap_admin_email"
    )]
    pub bootstrap_admin_password_file: Option<PathBuf>,

    /// Accounts to make at start-up, set by code (the development suite's
    /// demo accounts) rather than by flags.
    #[arg(skip)]
    pub seed_accounts: Vec<SeedAccount>,

    /// The user database.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Settings shared by every Agora service.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl UserConfig {
    /// The defaults, as if no flag or variable were given: for tests and the
    /// suite launcher, which set fields directly instead of touching the
    /// environment.
    pub fn defaults() -> Self {
        <Self as clap::Parser>::parse_from(["agora-user"])
    }

    /// Every account to seed: [`Self::seed_accounts`] plus the bootstrap admin.
    pub fn all_seed_accounts(&self) -> anyhow::Result<Vec<SeedAccount>> {
        let mut accounts = self.seed_accounts.clone();
        if let (Some(email), Some(path)) = (
            &self.bootstrap_admin_email,
            &self.bootstrap_admin_password_file,
        ) {
            let password = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "reading the bootstrap admin password from {}",
                    path.display()
                )
            })?;
            accounts.push(SeedAccount {
                email: email.clone(),
                display_name: "Administrator".to_owned(),
                role: Role::Admin,
                password: password.trim_end_matches(['\r', '\n']).to_owned(),
            });
        }
        Ok(accounts)
    }
}
