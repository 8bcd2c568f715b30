//! The `users` table. One short transaction per operation (the write, then its
//! domain event appended to the outbox; see [`crate::events`]), so no
//! transaction ever waits on the network while holding a lock; uniqueness is
//! left to the database's constraint, which settles concurrent registrations
//! correctly.

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
        "user_id, email, email_normalized, display_name, role, password_hash, created_at, updated_at"
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
        };
        let mut tx = self.db.begin_write().await?;
        sqlx::query(concat!(
            "INSERT INTO users (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
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

    /// Applies `changes` in one statement and returns the user as it now is.
    pub async fn update(&self, id: UserId, changes: UserChanges) -> Result<User, UserError> {
        let row = sqlx::query(concat!(
            "UPDATE users SET \
               email = COALESCE($2, email), \
               email_normalized = COALESCE($3, email_normalized), \
               display_name = COALESCE($4, display_name), \
               role = COALESCE($5, role), \
               password_hash = COALESCE($6, password_hash), \
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
        .bind(now_micros())
        .fetch_optional(self.db.pool())
        .await
        .map_err(map_write_error)?;
        match row {
            Some(row) => Ok(stored_user(&row)?.user),
            None => Err(UserError::NotFound(id.to_string())),
        }
    }

    /// Deletes a user; false when there was none.
    pub async fn delete(&self, id: UserId) -> Result<bool, UserError> {
        let mut tx = self.db.begin_write().await?;
        let result = sqlx::query("DELETE FROM users WHERE user_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        if result.rows_affected() == 0 {
            return Ok(false);
        }
        let appended = self.outbox.append(&mut tx, &[events::deleted(id)]).await?;
        tx.commit().await?;
        self.outbox.committed(appended);
        Ok(true)
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
    };
    Ok(StoredUser {
        user,
        password_hash: row.try_get("password_hash")?,
    })
}
