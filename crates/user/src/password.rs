//! argon2id password hashing, run on the blocking pool: one hash costs tens of
//! milliseconds of CPU, which would stall every other call on an async worker.
//!
//! Hashes run at most one per core at once ([`HASH_SLOTS`]): each holds a
//! 19 MiB buffer, and the blocking pool would otherwise run up to 512 of them
//! (64 concurrent sign-ins peaked at 1.2 GB; BENCHMARKS.md, "Memory"). Hashing
//! is CPU-bound, so more at once would not be faster; callers queue instead,
//! bounded by their deadlines.

use std::sync::LazyLock;

use tokio::sync::Semaphore;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::domain::Password;

/// Hashes in flight at once in this process: one per core.
static HASH_SLOTS: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(2, |cores| cores.get()))
});

/// Hashes a password with argon2id and a random salt (OWASP's recommended
/// parameters, the `argon2` crate's defaults: 19 MiB, 2 passes, 1 lane).
pub async fn hash(password: Password) -> anyhow::Result<String> {
    let _slot = HASH_SLOTS.acquire().await?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
    })
    .await?
}

/// True when `password` matches `stored`. A malformed stored hash counts as a
/// mismatch (and is logged), never as a match.
pub async fn verify(password: Password, stored: String) -> anyhow::Result<bool> {
    let _slot = HASH_SLOTS.acquire().await?;
    tokio::task::spawn_blocking(move || {
        let parsed = match PasswordHash::new(&stored) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::error!(%error, "stored password hash is malformed");
                return false;
            }
        };
        Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(Into::into)
}
