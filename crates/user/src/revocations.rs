//! The user service's own `token_revocations` table as a
//! [`RevocationFeed`]: the user service follows it like every other service
//! follows ListRevocations (so a revocation made by another replica is
//! refused here too); and the background task that prunes the rows no token
//! can need any more.

use std::time::Duration;

use agora_interceptors::api::time::now_micros;
use agora_interceptors::auth::revocations::FeedRead;
use agora_interceptors::auth::{Revocation, RevocationBatch, RevocationFeed};
use tokio_util::sync::CancellationToken;

use crate::store::UserStore;

/// How often expired revocations are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Rows per read of the table.
const PAGE: u32 = 1000;

/// Revocations before this instant (µs) no longer matter when no token
/// lives longer than `lifetime`: every token they revoked has expired.
pub fn horizon(now: i64, lifetime: Duration) -> i64 {
    now.saturating_sub(i64::try_from(lifetime.as_micros()).unwrap_or(i64::MAX))
}

/// Reads revocations from the table; see the module docs.
#[derive(Debug)]
pub struct StoreFeed {
    store: UserStore,
    /// How long a token can be accepted: older revocations no longer matter.
    lifetime: Duration,
}

impl StoreFeed {
    /// A feed over `store` whose tokens live at most `lifetime` (the access
    /// token lifetime plus the verifiers' leeway).
    pub fn new(store: UserStore, lifetime: Duration) -> Self {
        Self { store, lifetime }
    }
}

/// Deletes the revocations of tokens that have all expired (tokens live at
/// most `lifetime`), now and every minute until `stop` (a
/// [`agora_interceptors::ServiceHost`] background task).
pub async fn prune_every_minute(store: UserStore, lifetime: Duration, stop: CancellationToken) {
    loop {
        match store
            .prune_revocations(horizon(now_micros(), lifetime))
            .await
        {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "expired revocations pruned"),
            Err(error) => tracing::warn!(%error, "pruning expired revocations failed; will retry"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

impl RevocationFeed for StoreFeed {
    fn read(&self, since: i64) -> FeedRead<'_> {
        Box::pin(async move {
            let read_at = now_micros();
            let horizon = horizon(read_at, self.lifetime);
            let mut batch = RevocationBatch {
                revocations: Vec::new(),
                horizon,
                read_at,
            };
            let mut after: Option<String> = None;
            loop {
                let rows = self
                    .store
                    .revocations(since.max(horizon), after.as_deref(), PAGE)
                    .await
                    .map_err(|error| error.to_string())?;
                let full = rows.len() == PAGE as usize;
                after = rows.last().map(|row| row.subject.clone());
                batch
                    .revocations
                    .extend(rows.into_iter().map(|row| Revocation {
                        subject: row.subject,
                        revoked_at: row.revoked_at,
                    }));
                if !full {
                    return Ok(batch);
                }
            }
        })
    }
}
