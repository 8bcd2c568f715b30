//! The consumer: one task per feed (order, payment) that resumes from the
//! cursor stored with the last event it processed, and turns each event into
//! at most one notification.
//!
//! Replicas on one database take turns on each gRPC feed through a lease
//! row (`feed_leases`): the holder renews it while it consumes; the others
//! stand by and take over when it stops or its lease expires. Should two
//! ever overlap (a holder stalled past its lease), the inbox still keeps
//! one notification per event: its row is inserted `ON CONFLICT DO
//! NOTHING` and the notification only when that insert did, in one
//! transaction. From JetStream, replicas share the durable consumer instead.
//!
//! Per event: an event already in the inbox is skipped (its cursor
//! recorded); otherwise the notifier is called, up to `max_attempts` times
//! with a doubling backoff, and then the inbox row, the notification and the
//! cursor are written in one transaction. An event still failing after its
//! tries is written as a dead letter instead (same transaction shape) and
//! the feed moves on. A crash anywhere leaves the cursor at the last event
//! fully recorded: the next start delivers the rest again, and the inbox
//! drops what was recorded already. The notifier may see an event twice
//! (sent, then a crash before recording): see [`crate::notifier`].

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio_util::sync::CancellationToken;

use crate::domain::Delivery;
use crate::downstream::{Feed, FeedError};
use crate::notifier::Notifier;
use crate::store::NotificationStore;

/// How the consumer retries.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerSettings {
    /// Tries of one event before it becomes a dead letter.
    pub max_attempts: u32,
    /// First backoff between tries (doubles per try).
    pub retry_base: Duration,
    /// Wait before reconnecting to a feed that failed.
    pub reconnect: Duration,
    /// How long a replica's hold on a gRPC feed lasts unrenewed.
    pub lease_ttl: Duration,
}

/// What the consumer counts: `agora_notifications_total{outcome}`.
#[derive(Clone, Debug, Default)]
pub struct ConsumerMetrics {
    outcomes: Family<Vec<(String, String)>, Counter>,
}

impl ConsumerMetrics {
    /// Registers the counters on `metrics`.
    pub fn register(metrics: &agora_interceptors::metrics::GrpcMetrics) -> Self {
        let this = Self::default();
        metrics.register(
            "agora_notifications",
            "Events processed by the notification service, by outcome (sent, duplicate, dead_letter)",
            this.outcomes.clone(),
        );
        this
    }

    fn count(&self, outcome: &str) {
        self.outcomes
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }
}

/// Consumes one feed until `stop`, while this replica holds the feed's
/// lease (see [`NotificationStore::claim_feed`]): replicas on one database
/// take turns, and one that dies is replaced within the lease's time.
pub async fn run(
    feed: Feed,
    store: NotificationStore,
    notifier: Arc<dyn Notifier>,
    settings: ConsumerSettings,
    metrics: ConsumerMetrics,
    stop: CancellationToken,
) {
    let holder = uuid::Uuid::now_v7().to_string();
    let lease = Lease {
        store: &store,
        source: feed.source,
        holder: &holder,
        ttl: settings.lease_ttl.max(Duration::from_millis(300)),
    };
    consume(&feed, &lease, notifier.as_ref(), settings, &metrics, &stop).await;
    if let Err(error) = store.release_feed(feed.source, &holder).await {
        tracing::warn!(source = feed.source, %error, "releasing the feed's lease failed; another replica takes over when it expires");
    }
}

/// A replica's hold on consuming one feed.
struct Lease<'a> {
    store: &'a NotificationStore,
    source: &'static str,
    holder: &'a str,
    ttl: Duration,
}

impl Lease<'_> {
    /// Takes or renews it; false while another replica holds it (or the
    /// database cannot say).
    async fn claim(&self) -> bool {
        match self
            .store
            .claim_feed(self.source, self.holder, self.ttl)
            .await
        {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(source = self.source, %error, "cannot claim the feed's lease");
                false
            }
        }
    }

    /// How often it is renewed, and a waiting replica tries again.
    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
}

async fn consume(
    feed: &Feed,
    lease: &Lease<'_>,
    notifier: &dyn Notifier,
    settings: ConsumerSettings,
    metrics: &ConsumerMetrics,
    stop: &CancellationToken,
) {
    let store = lease.store;
    let mut cursor_override: Option<String> = None;
    let mut waiting = false;
    while !stop.is_cancelled() {
        if !lease.claim().await {
            if !waiting {
                tracing::info!(
                    source = feed.source,
                    "another replica consumes this feed; standing by"
                );
                waiting = true;
            }
            pause(stop, lease.renew_every()).await;
            continue;
        }
        if waiting {
            tracing::info!(source = feed.source, "this replica consumes the feed now");
            waiting = false;
        }
        let cursor = match cursor_override.take() {
            Some(cursor) => cursor,
            None => match store.cursor(feed.source).await {
                Ok(cursor) => cursor,
                Err(error) => {
                    tracing::warn!(source = feed.source, %error, "reading the feed cursor failed");
                    pause(stop, settings.reconnect).await;
                    continue;
                }
            },
        };
        let stream = match feed.subscribe(&cursor).await {
            Ok(stream) => stream,
            Err(FeedError::Expired { oldest }) => {
                tracing::error!(
                    source = feed.source,
                    %cursor,
                    %oldest,
                    "the feed pruned events this service had not processed yet (its retention \
                     is shorter than this outage); resuming from the oldest it keeps"
                );
                metrics.count("missed_retention");
                cursor_override = Some(oldest);
                continue;
            }
            Err(FeedError::Unavailable(error)) => {
                tracing::warn!(source = feed.source, %error, "cannot subscribe to the feed; retrying");
                pause(stop, settings.reconnect).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        let mut renew = tokio::time::interval(lease.renew_every());
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                _ = renew.tick() => {
                    if lease.claim().await {
                        continue;
                    }
                    tracing::warn!(source = feed.source, "lost the feed's lease; another replica takes over");
                    break;
                }
                next = stream.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    match process(store, notifier, &delivery, settings, metrics, stop).await {
                        Ok(Outcome::Stopped) => return,
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(source = feed.source, %error, "recording an event failed; resubscribing");
                            break;
                        }
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(source = feed.source, %error, "the feed failed; resubscribing");
                    break;
                }
                None => break,
            }
        }
        pause(stop, settings.reconnect).await;
    }
}

/// Consumes one producer's JetStream stream through the durable consumer
/// until `stop`: each message is processed as a feed's event is, then
/// acknowledged; one not acknowledged (a crash, a failed write) is
/// redelivered by JetStream and dropped by the inbox if it was recorded.
/// A dead letter is also published to the dead-letter stream and its
/// message terminated (JetStream stops redelivering it); a redelivered one
/// (the publish or the termination was lost) is published again, which the
/// dead-letter stream drops as a duplicate, and terminated.
pub async fn run_jetstream(
    feed: crate::downstream::JetStreamFeed,
    store: NotificationStore,
    notifier: Arc<dyn Notifier>,
    settings: ConsumerSettings,
    metrics: ConsumerMetrics,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let stream = match feed.messages().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(source = feed.source, %error, "cannot read the JetStream stream; retrying");
                pause(&stop, settings.reconnect).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = stream.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    let processing = process(
                        &store,
                        notifier.as_ref(),
                        &message.delivery,
                        settings,
                        &metrics,
                        &stop,
                    );
                    let processed = in_progress(&message, processing).await;
                    let settled = match processed {
                        Ok(Outcome::Stopped) => return,
                        Ok(outcome) => settle(&store, &message, outcome).await,
                        Err(error) => Err(FeedError::Unavailable(error.to_string())),
                    };
                    if let Err(error) = settled {
                        tracing::warn!(source = feed.source, %error, "an event was not acknowledged; it will be redelivered");
                        break;
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(source = feed.source, %error, "the JetStream stream failed; reconnecting");
                    break;
                }
                None => break,
            }
        }
        pause(&stop, settings.reconnect).await;
    }
}

/// Awaits `processing` of `message`, telling JetStream every third of its
/// ack wait that the message is in progress, so slow tries are not
/// redelivered (to another replica) meanwhile.
async fn in_progress<T>(
    message: &crate::downstream::JetStreamDelivery,
    processing: impl std::future::Future<Output = T>,
) -> T {
    let mut processing = std::pin::pin!(processing);
    let mut keepalive = tokio::time::interval(crate::downstream::ACK_WAIT / 3);
    keepalive.tick().await;
    loop {
        tokio::select! {
            done = &mut processing => return done,
            _ = keepalive.tick() => {
                if let Err(error) = message.in_progress().await {
                    tracing::warn!(event_id = %message.delivery.event_id, %error, "cannot extend the ack wait; JetStream may redeliver the event meanwhile");
                }
            }
        }
    }
}

/// Acknowledges a processed JetStream message, or for a dead letter (new,
/// or recorded before and redelivered) publishes it to the dead-letter
/// stream and terminates it.
async fn settle(
    store: &NotificationStore,
    message: &crate::downstream::JetStreamDelivery,
    outcome: Outcome,
) -> Result<(), FeedError> {
    let dead = match outcome {
        Outcome::Dead { attempts, error } => Some((i64::from(attempts), error)),
        Outcome::Duplicate => store
            .dead_letter(&message.delivery.event_id)
            .await
            .map_err(|e| FeedError::Unavailable(e.to_string()))?
            .map(|dead| (dead.attempts, dead.last_error)),
        Outcome::Sent | Outcome::Skipped | Outcome::Stopped => None,
    };
    match dead {
        Some((attempts, error)) => message.dead_letter(attempts, &error).await,
        None => message.ack().await,
    }
}

/// What processing one delivery came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Notified and recorded.
    Sent,
    /// An event that notifies nobody.
    Skipped,
    /// Recorded already: a redelivery (perhaps of a dead letter).
    Duplicate,
    /// Given up on after `attempts` tries: recorded as a dead letter.
    Dead {
        /// Tries made.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// Shutdown came during the retries: nothing recorded, so the next
    /// start delivers it again (do not acknowledge it).
    Stopped,
}

/// Processes one delivery: dedup, notify with retries, record (or dead
/// letter). Errors are the store's: the caller resubscribes from the stored
/// cursor.
pub async fn process(
    store: &NotificationStore,
    notifier: &dyn Notifier,
    delivery: &Delivery,
    settings: ConsumerSettings,
    metrics: &ConsumerMetrics,
    stop: &CancellationToken,
) -> Result<Outcome, crate::error::NotificationError> {
    // An event that notifies nobody never reaches the inbox: skip it
    // without asking (JetStream delivers every event of a stream).
    let notification = match &delivery.notification {
        Ok(None) => {
            store.skip(&delivery.source, &delivery.cursor).await?;
            return Ok(Outcome::Skipped);
        }
        Ok(Some(notification)) => Ok(notification),
        Err(error) => Err(error),
    };
    if store.seen(&delivery.event_id).await? {
        metrics.count("duplicate");
        store.skip(&delivery.source, &delivery.cursor).await?;
        return Ok(Outcome::Duplicate);
    }
    let notification = match notification {
        Ok(notification) => notification,
        Err(error) => {
            tracing::error!(event_id = %delivery.event_id, %error, "an event cannot be processed");
            metrics.count("dead_letter");
            store.record_dead(delivery, 1, error).await?;
            return Ok(Outcome::Dead {
                attempts: 1,
                error: error.clone(),
            });
        }
    };
    let mut backoff = settings.retry_base;
    let mut attempt = 1;
    loop {
        match notifier.send(notification).await {
            Ok(()) => {
                let fresh = store.record_sent(delivery, notification).await?;
                metrics.count(if fresh { "sent" } else { "duplicate" });
                return Ok(if fresh {
                    Outcome::Sent
                } else {
                    Outcome::Duplicate
                });
            }
            Err(error) if attempt >= settings.max_attempts.max(1) => {
                tracing::error!(
                    event_id = %delivery.event_id,
                    attempt,
                    %error,
                    "notification failed on every try; dead-lettered"
                );
                metrics.count("dead_letter");
                let error = error.to_string();
                store.record_dead(delivery, attempt, &error).await?;
                return Ok(Outcome::Dead {
                    attempts: attempt,
                    error,
                });
            }
            Err(error) => {
                tracing::warn!(event_id = %delivery.event_id, attempt, %error, "notification failed; retrying");
                attempt += 1;
                pause(stop, backoff).await;
                if stop.is_cancelled() {
                    return Ok(Outcome::Stopped);
                }
                backoff = backoff.saturating_mul(2);
            }
        }
    }
}

async fn pause(stop: &CancellationToken, wait: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(wait) => {}
    }
}
