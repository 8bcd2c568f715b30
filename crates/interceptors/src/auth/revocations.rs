//! Revoked tokens: which subjects' tokens stop working, and from when.
//!
//! The user service records a revocation (subject, instant) when an account
//! is deleted or disabled, when its role changes, and on RevokeTokens. Every
//! verifier holds a [`Revocations`] set and refuses a token whose `iat` is
//! at or before its subject's revocation second, on the verified-token cache's
//! hits too. The set is fed by [`follow`], a background loop that asks a
//! [`RevocationFeed`] (the user service's `ListRevocations`, or its own table
//! inside the user service) for what changed every poll interval, so no call
//! waits on the user service and a revocation takes effect within about one
//! poll everywhere.
//!
//! `iat` has one-second resolution: a revocation at 12:00:00.4 refuses every
//! token stamped 12:00:00, including one signed at 12:00:00.7. The issuer
//! therefore stamps a token signed at or before the subject's revocation
//! second with the second after it
//! ([`TokenIssuer::issue_after`](super::TokenIssuer::issue_after)), so signing
//! in again right after an account is re-enabled works; and the user service
//! records a subject's next revocation at least one second past its previous
//! one, so it still covers such tokens.
//!
//! While the feed cannot be read the last list is kept (fail open for
//! revocations not yet seen, never for ones already known), a warning is
//! logged, and `agora_auth_revocations_age_seconds` grows.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::metrics::GrpcMetrics;

/// How far back each poll looks past the previous read: a revocation whose
/// transaction took its timestamp before the previous read but committed
/// after it is still seen. Rows are few, so re-reading them costs little.
pub const POLL_OVERLAP: Duration = Duration::from_secs(30);

/// One revocation: tokens of `subject` issued at or before `revoked_at`
/// (microseconds since the epoch) are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The token subject (a user id).
    pub subject: String,
    /// When, in microseconds since the Unix epoch.
    pub revoked_at: i64,
}

/// What one read of a feed found.
#[derive(Clone, Debug, Default)]
pub struct RevocationBatch {
    /// Revocations at or after the instant asked for.
    pub revocations: Vec<Revocation>,
    /// Revocations before this instant (µs) were pruned: every token issued
    /// before it has expired, so the set forgets them too.
    pub horizon: i64,
    /// The feed's clock at the read (µs): the next read starts from here,
    /// less [`POLL_OVERLAP`].
    pub read_at: i64,
}

/// What [`RevocationFeed::read`] returns: the batch, or why it failed.
pub type FeedRead<'a> = BoxFuture<'a, Result<RevocationBatch, String>>;

/// Where revocations come from.
pub trait RevocationFeed: Send + Sync + 'static {
    /// Every revocation at or after `since` (µs since the epoch), all pages.
    fn read(&self, since: i64) -> FeedRead<'_>;
}

/// The revoked subjects a verifier refuses, shared by every clone.
#[derive(Clone, Debug, Default)]
pub struct Revocations {
    /// Subject → the last second (since the epoch) whose tokens are revoked.
    by_subject: Arc<RwLock<HashMap<String, u64, foldhash::fast::RandomState>>>,
}

impl Revocations {
    /// An empty set: nothing is revoked.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when a token of `subject` issued at `iat` (seconds) is revoked.
    pub fn is_revoked(&self, subject: &str, iat: u64) -> bool {
        self.revoked_through(subject)
            .is_some_and(|second| iat <= second)
    }

    /// The last second whose tokens of `subject` are revoked, if any.
    pub fn revoked_through(&self, subject: &str) -> Option<u64> {
        let set = self.by_subject.read().unwrap_or_else(|p| p.into_inner());
        set.get(subject).copied()
    }

    /// Adds revocations (a later one of a subject wins) and forgets those
    /// before `horizon` (µs), whose tokens have all expired.
    pub fn apply(&self, revocations: &[Revocation], horizon: i64) {
        let horizon = second_of(horizon);
        let mut set = self.by_subject.write().unwrap_or_else(|p| p.into_inner());
        for revocation in revocations {
            let second = second_of(revocation.revoked_at);
            let entry = set.entry(revocation.subject.clone()).or_insert(second);
            *entry = (*entry).max(second);
        }
        set.retain(|_, second| *second >= horizon);
    }

    /// How many subjects are revoked.
    pub fn len(&self) -> usize {
        self.by_subject
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The whole second (since the epoch) an instant in µs falls in.
pub fn second_of(micros: i64) -> u64 {
    u64::try_from(micros.div_euclid(1_000_000)).unwrap_or_default()
}

/// What operators watch of the follower.
#[derive(Clone, Debug)]
struct FollowMetrics {
    age: Gauge<f64, AtomicU64>,
    failures: Counter,
    revoked: Gauge,
}

impl FollowMetrics {
    fn register(metrics: &GrpcMetrics) -> Self {
        let this = Self {
            age: Gauge::default(),
            failures: Counter::default(),
            revoked: Gauge::default(),
        };
        metrics.register(
            "agora_auth_revocations_age_seconds",
            "Seconds since the revocation list was last read successfully (since start-up until the first read)",
            this.age.clone(),
        );
        metrics.register(
            "agora_auth_revocation_poll_failures",
            "Reads of the revocation list that failed",
            this.failures.clone(),
        );
        metrics.register(
            "agora_auth_revoked_subjects",
            "Subjects whose tokens this service refuses",
            this.revoked.clone(),
        );
        this
    }
}

/// Reads `feed` every `every` into `set` until `stop`: the first read takes
/// everything still relevant, later ones what changed since the previous read
/// (less [`POLL_OVERLAP`]). A failed read keeps the set as it is, logs a
/// warning (once until a read succeeds again) and counts; the age metric
/// says how stale the set is.
pub async fn follow(
    set: Revocations,
    feed: Arc<dyn RevocationFeed>,
    every: Duration,
    metrics: &GrpcMetrics,
    stop: CancellationToken,
) {
    let metrics = FollowMetrics::register(metrics);
    let started = Instant::now();
    let mut last_read: Option<Instant> = None;
    let mut since = 0_i64;
    let mut failing = false;
    loop {
        let read = tokio::select! {
            () = stop.cancelled() => return,
            read = feed.read(since) => read,
        };
        match read {
            Ok(batch) => {
                set.apply(&batch.revocations, batch.horizon);
                since = batch
                    .read_at
                    .saturating_sub(i64::try_from(POLL_OVERLAP.as_micros()).unwrap_or(i64::MAX));
                last_read = Some(Instant::now());
                if failing {
                    tracing::info!("revocation list read again");
                    failing = false;
                }
            }
            Err(error) => {
                metrics.failures.inc();
                if !failing {
                    tracing::warn!(
                        %error,
                        "cannot read the revocation list; keeping the last one (tokens revoked since are accepted until it is read again)"
                    );
                    failing = true;
                }
            }
        }
        metrics
            .age
            .set(last_read.unwrap_or(started).elapsed().as_secs_f64());
        metrics
            .revoked
            .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::time::now_micros;
    use crate::auth::{
        AuthError, KeySet, Role, SigningKey, TokenIssuer, TokenSettings, TokenVerifier,
    };

    #[test]
    fn revoked_tokens_are_refused_on_cache_hits_and_later_ones_accepted() {
        let key = SigningKey::generate("k").unwrap();
        let mut keys = KeySet::new();
        keys.insert(key.public_jwk()).unwrap();
        let settings = TokenSettings::default();
        let issuer = TokenIssuer::new(&key, settings.clone()).unwrap();
        let verifier = TokenVerifier::new(keys, &settings);
        let ttl = Duration::from_secs(60);
        let before = issuer.issue("u", Role::Customer, ttl).unwrap().token;
        assert!(verifier.verify(&before).is_ok(), "verified, and now cached");

        let now = now_micros();
        let revoke = |at| Revocation {
            subject: "u".into(),
            revoked_at: at,
        };
        verifier.revocations().apply(&[revoke(now)], 0);
        assert_eq!(verifier.verify(&before), Err(AuthError::Revoked));

        // Signed in the revocation's own second: stamped with the next one.
        let through = verifier.revocations().revoked_through("u");
        let after = issuer
            .issue_after("u", Role::Customer, ttl, through)
            .unwrap()
            .token;
        assert_eq!(verifier.verify(&after).unwrap().subject, "u");
        // The next revocation lands a second later (the store sees to it)
        // and covers it.
        verifier.revocations().apply(&[revoke(now + 1_000_000)], 0);
        assert_eq!(verifier.verify(&after), Err(AuthError::Revoked));
        // Another subject is untouched.
        let other = issuer.issue("v", Role::Customer, ttl).unwrap().token;
        assert!(verifier.verify(&other).is_ok());
    }

    fn at(second: i64, micros: i64) -> i64 {
        second * 1_000_000 + micros
    }

    #[test]
    fn a_token_of_the_revocation_second_or_before_is_revoked() {
        let set = Revocations::new();
        set.apply(
            &[Revocation {
                subject: "u".into(),
                revoked_at: at(100, 400_000),
            }],
            0,
        );
        assert!(set.is_revoked("u", 99));
        assert!(set.is_revoked("u", 100));
        assert!(!set.is_revoked("u", 101));
        assert!(!set.is_revoked("v", 1));
    }

    #[test]
    fn the_later_revocation_wins_and_the_horizon_forgets() {
        let set = Revocations::new();
        let revoke = |second| Revocation {
            subject: "u".into(),
            revoked_at: at(second, 0),
        };
        set.apply(&[revoke(200), revoke(100)], 0);
        assert_eq!(set.revoked_through("u"), Some(200));
        set.apply(&[], at(150, 0));
        assert_eq!(set.revoked_through("u"), Some(200));
        set.apply(&[], at(201, 0));
        assert!(set.is_empty());
    }
}
