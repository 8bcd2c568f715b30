//! Accounts made at start-up when their email is not registered yet: a
//! deployment's first admin (`--bootstrap-admin-email`), and the development
//! suite's demo accounts. An account that already exists is left exactly as
//! it is (its password, role and name may have been changed since), so
//! seeding happens once per database however often the service restarts.

use std::fmt;

use agora_interceptors::auth::Role;
use anyhow::Context;

use crate::domain::{DisplayName, Email, Password, User, parse_user_role};
use crate::error::UserError;
use crate::password;
use crate::store::UserStore;

/// An account to make if its email is free.
#[derive(Clone)]
pub struct SeedAccount {
    /// Its email (the identity looked up on later starts).
    pub email: String,
    /// Its display name.
    pub display_name: String,
    /// Customer or admin.
    pub role: Role,
    /// Its password (12 to 128 characters, as for any new account).
    pub password: String,
}

impl fmt::Debug for SeedAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedAccount")
            .field("email", &self.email)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Whether [`ensure`] made the account or found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seeded {
    /// It was made now.
    Created(User),
    /// An account with that email was already there; it was not touched.
    Existing(User),
}

impl Seeded {
    /// The account either way.
    pub fn user(&self) -> &User {
        match self {
            Seeded::Created(user) | Seeded::Existing(user) => user,
        }
    }
}

/// Makes `account` unless its email is taken. A concurrent start doing the
/// same is settled by the email's unique constraint.
pub async fn ensure(store: &UserStore, account: &SeedAccount) -> anyhow::Result<Seeded> {
    let what = || format!("seed account {}", account.email);
    let email = Email::parse(&account.email).with_context(|| format!("{}: email", what()))?;
    if let Some(existing) = store.find_by_email(&email).await? {
        return Ok(Seeded::Existing(existing.user));
    }
    let display_name = DisplayName::parse(&account.display_name)
        .with_context(|| format!("{}: display name", what()))?;
    let role = parse_user_role(account.role).with_context(|| format!("{}: role", what()))?;
    let secret =
        Password::parse_new(&account.password).with_context(|| format!("{}: password", what()))?;
    let hash = password::hash(secret).await?;
    match store.insert(email.clone(), display_name, role, &hash).await {
        Ok(user) => {
            tracing::info!(email = %user.email.as_str(), role = role.as_str(), "seeded an account");
            Ok(Seeded::Created(user))
        }
        Err(UserError::EmailTaken) => {
            let existing = store
                .find_by_email(&email)
                .await?
                .context("a seeded account vanished while being made")?;
            Ok(Seeded::Existing(existing.user))
        }
        Err(error) => Err(anyhow::Error::new(error).context(what())),
    }
}
