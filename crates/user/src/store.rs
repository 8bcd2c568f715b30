//! The `users` table. One short transaction per operation (the write, then its
//! domain event appended to the outbox; see [`crate::events`]), so no
//! transaction ever waits on the network while holding a lock; uniqueness is
//! left to the database's constraint, which settles concurrent registrations
//! correctly. The `token_revocations` table is written in the transaction of
//! the change that revokes (delete, disable, role change, RevokeTokens).

use agora_interceptors::api::time::now_micros;
use agora_interceptors::auth::Role;
use agora_interceptors::db::{self, Database};
use agora_interceptors::outbox::Outbox;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::domain::{DisplayName, Email, User, UserId};
use crate::error::UserError;
use crate::events;

/// Name of the unique constraint on normalised emails (see the migration).
const EMAIL_CONSTRAINT: &str = "users_email_normalized_key";

/// The columns every query reads, as a literal so queries stay `&'static str`
/// (sqlx refuses SQL built at run time, a guard against injection).
macro_rules! columns {
    () => {
        "user_id, email, email_normalized, display_name, role, password_hash, created_at, updated_at, disabled_at"
    };
}

/// A user with the hash needed to check their password.
#[derive(Debug)]
pub struct StoredUser {
    /// The user.
    pub user: User,
    /// PHC-format argon2id hash.
    pub password_hash: String,
}

/// The changes an UpdateUser asks for; `None` leaves a column as it is.
#[derive(Debug, Default)]
pub struct UserChanges {
    /// New email.
    pub email: Option<Email>,
    /// New display name.
    pub display_name: Option<DisplayName>,
    /// New role.
    pub role: Option<Role>,
    /// New password hash.
    pub password_hash: Option<String>,
    /// Disable (true) or enable (false) the account.
    pub disabled: Option<bool>,
}

impl UserChanges {
    /// Why these changes revoke the account's tokens, if they do: disabling
    /// it, or changing its role (tokens carry the role they were issued with).
    fn revokes(&self) -> Option<&'static str> {
        if self.disabled == Some(true) {
            Some(REASON_DISABLED)
        } else if self.role.is_some() {
            Some(REASON_ROLE_CHANGED)
        } else {
            None
        }
    }
}

/// `Revocation.reason` of a deleted account.
pub const REASON_DELETED: &str = "deleted";
/// `Revocation.reason` of a disabled account.
pub const REASON_DISABLED: &str = "disabled";
/// `Revocation.reason` of an account whose role changed.
pub const REASON_ROLE_CHANGED: &str = "role_changed";
/// `Revocation.reason` of RevokeTokens.
pub const REASON_REVOKED: &str = "revoked";

/// One row of `token_revocations`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRevocation {
    /// The token subject (a user id).
    pub subject: String,
    /// When, µs since the epoch.
    pub revoked_at: i64,
    /// Why (one of the `REASON_*`).
    pub reason: String,
}

/// Reads and writes users.
#[derive(Clone, Debug)]
pub struct UserStore {
    db: Database,
    outbox: Outbox,
}

impl UserStore {
    /// A store over `db`, whose migrations have been applied.
    pub fn new(db: Database) -> Self {
        let outbox = Outbox::new(db.clone(), "user");
        Self { db, outbox }
    }

    /// The outbox the user events go to, for the event feed.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Inserts a new user; EMAIL_TAKEN when the email is in use.
    pub async fn insert(
        &self,
        email: Email,
        display_name: DisplayName,
        role: Role,
        password_hash: &str,
    ) -> Result<User, UserError> {
        let now = now_micros();
        let user = User {
            id: UserId::new(),
            email,
            display_name,
            role,
            created_at: now,
            updated_at: now,
            disabled: false,
        };
        let mut tx = self.db.begin_write().await?;
        sqlx::query(concat!(
            "INSERT INTO users (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)"
        ))
        .bind(user.id.to_string())
        .bind(user.email.as_str())
        .bind(user.email.normalized())
        .bind(user.display_name.as_str())
        .bind(role.as_str())
        .bind(password_hash)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(map_write_error)?;
        let appended = self
            .outbox
            .append(&mut tx, &[events::registered(&user)])
            .await?;
        tx.commit().await?;
        self.outbox.committed(appended);
        Ok(user)
    }

    /// The user with this id, if any.
    pub async fn get(&self, id: UserId) -> Result<Option<StoredUser>, UserError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM users WHERE user_id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| stored_user(&row)).transpose()
    }

    /// The user with this email (compared case-insensitively), if any.
    pub async fn find_by_email(&self, email: &Email) -> Result<Option<StoredUser>, UserError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM users WHERE email_normalized = $1"
        ))
        .bind(email.normalized())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| stored_user(&row)).transpose()
    }

    /// Applies `changes` and returns the user as it now is; a change that
    /// revokes the account's tokens ([`UserChanges`]) records the revocation
    /// in the same transaction, returned too.
    pub async fn update(
        &self,
        id: UserId,
        changes: UserChanges,
    ) -> Result<(User, Option<StoredRevocation>), UserError> {
        let now = now_micros();
        let revokes = changes.revokes();
        let mut tx = self.db.begin_write().await?;
        let row = sqlx::query(concat!(
            "UPDATE users SET \
               email = COALESCE($2, email), \
               email_normalized = COALESCE($3, email_normalized), \
               display_name = COALESCE($4, display_name), \
               role = COALESCE($5, role), \
               password_hash = COALESCE($6, password_hash), \
               disabled_at = CASE WHEN $8 = 1 THEN COALESCE(disabled_at, $7) \
                                  WHEN $8 = 0 THEN NULL ELSE disabled_at END, \
               updated_at = $7 \
             WHERE user_id = $1 RETURNING ",
            columns!(),
            ""
        ))
        .bind(id.to_string())
        .bind(changes.email.as_ref().map(|e| e.as_str().to_owned()))
        .bind(changes.email.as_ref().map(|e| e.normalized().to_owned()))
        .bind(changes.display_name.as_ref().map(|d| d.as_str().to_owned()))
        .bind(changes.role.map(|r| r.as_str().to_owned()))
        .bind(changes.password_hash)
        .bind(now)
        .bind(changes.disabled.map_or(-1_i64, i64::from))
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_write_error)?;
        let Some(row) = row else {
            return Err(UserError::NotFound(id.to_string()));
        };
        let user = stored_user(&row)?.user;
        let revocation = match revokes {
            Some(reason) => Some(revoke(&mut tx, id, now, reason).await?),
            None => None,
        };
        tx.commit().await?;
        Ok((user, revocation))
    }

    /// Deletes a user and revokes its tokens; `None` when there was none.
    pub async fn delete(&self, id: UserId) -> Result<Option<StoredRevocation>, UserError> {
        let mut tx = self.db.begin_write().await?;
        let result = sqlx::query("DELETE FROM users WHERE user_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        if result.rows_affected() == 0 {
            return Ok(None);
        }
        let revocation = revoke(&mut tx, id, now_micros(), REASON_DELETED).await?;
        let appended = self.outbox.append(&mut tx, &[events::deleted(id)]).await?;
        tx.commit().await?;
        self.outbox.committed(appended);
        Ok(Some(revocation))
    }

    /// Revokes every token of an existing user issued up to now; NOT_FOUND
    /// when there is no such user.
    pub async fn revoke_tokens(&self, id: UserId) -> Result<StoredRevocation, UserError> {
        let mut tx = self.db.begin_write().await?;
        let exists = sqlx::query("SELECT user_id FROM users WHERE user_id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Err(UserError::NotFound(id.to_string()));
        }
        let revocation = revoke(&mut tx, id, now_micros(), REASON_REVOKED).await?;
        tx.commit().await?;
        Ok(revocation)
    }

    /// When the user's tokens were last revoked (µs), if they were.
    pub async fn revoked_at(&self, id: UserId) -> Result<Option<i64>, UserError> {
        Ok(
            sqlx::query_scalar("SELECT revoked_at FROM token_revocations WHERE subject = $1")
                .bind(id.to_string())
                .fetch_optional(self.db.pool())
                .await?,
        )
    }

    /// Up to `limit` revocations at or after `since` (µs), by subject after
    /// `after`.
    pub async fn revocations(
        &self,
        since: i64,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredRevocation>, UserError> {
        let rows = sqlx::query(
            "SELECT subject, revoked_at, reason FROM token_revocations \
             WHERE revoked_at >= $1 AND subject > $2 ORDER BY subject LIMIT $3",
        )
        .bind(since)
        .bind(after.unwrap_or_default().to_owned())
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredRevocation {
                    subject: row.try_get("subject")?,
                    revoked_at: row.try_get("revoked_at")?,
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Forgets revocations before `horizon` (µs): every token they revoked
    /// has expired.
    pub async fn prune_revocations(&self, horizon: i64) -> Result<u64, UserError> {
        let mut tx = self.db.begin_write().await?;
        let pruned = sqlx::query("DELETE FROM token_revocations WHERE revoked_at < $1")
            .bind(horizon)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(pruned)
    }

    /// Up to `limit` users with ids after `after`, oldest first (UUIDv7 ids sort
    /// by creation time).
    pub async fn list(&self, after: Option<&str>, limit: u32) -> Result<Vec<User>, UserError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM users WHERE user_id > $1 ORDER BY user_id LIMIT $2"
        ))
        .bind(after.unwrap_or_default().to_owned())
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| stored_user(row).map(|stored| stored.user))
            .collect()
    }
}

/// Records that `subject`'s tokens issued up to `at` are revoked, inside
/// `tx`. A subject revoked before is revoked at least one second past its
/// previous revocation: tokens signed after that one were stamped with the
/// next second ([`TokenIssuer::issue_after`]), and this revocation must
/// cover them.
///
/// [`TokenIssuer::issue_after`]: agora_interceptors::auth::TokenIssuer::issue_after
async fn revoke(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    subject: UserId,
    at: i64,
    reason: &str,
) -> Result<StoredRevocation, UserError> {
    let revoked_at: i64 = sqlx::query_scalar(
        "INSERT INTO token_revocations (subject, revoked_at, reason) VALUES ($1, $2, $3) \
         ON CONFLICT (subject) DO UPDATE SET \
           revoked_at = CASE WHEN excluded.revoked_at > token_revocations.revoked_at + 1000000 \
                             THEN excluded.revoked_at \
                             ELSE token_revocations.revoked_at + 1000000 END, \
           reason = excluded.reason \
         RETURNING revoked_at",
    )
    .bind(subject.to_string())
    .bind(at)
    .bind(reason)
    .fetch_one(&mut **tx)
    .await?;
    Ok(StoredRevocation {
        subject: subject.to_string(),
        revoked_at,
        reason: reason.to_owned(),
    })
}

fn map_write_error(error: sqlx::Error) -> UserError {
    match db::unique_violation(&error) {
        // PostgreSQL names the constraint; SQLite does not, and the email is the
        // table's only unique key besides its freshly generated UUIDv7.
        Some(None) => UserError::EmailTaken,
        Some(Some(name)) if name == EMAIL_CONSTRAINT => UserError::EmailTaken,
        _ => error.into(),
    }
}

fn stored_user(row: &AnyRow) -> Result<StoredUser, UserError> {
    let id: String = row.try_get("user_id")?;
    let role: String = row.try_get("role")?;
    let user = User {
        id: UserId::parse(&id).map_err(|_| db::corrupt("user id", &id))?,
        email: Email::from_stored(row.try_get("email")?, row.try_get("email_normalized")?),
        display_name: DisplayName::from_stored(row.try_get("display_name")?),
        role: Role::parse(&role).ok_or_else(|| db::corrupt("role", &role))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        disabled: row.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
    };
    Ok(StoredUser {
        user,
        password_hash: row.try_get("password_hash")?,
    })
}
