//! The consumer: one task per feed (order, payment) that resumes from the
//! cursor stored with the last event it processed, and turns each event into
//! at most one notification.
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

/// Consumes one feed until `stop`.
pub async fn run(
    feed: Feed,
    store: NotificationStore,
    notifier: Arc<dyn Notifier>,
    settings: ConsumerSettings,
    metrics: ConsumerMetrics,
    stop: CancellationToken,
) {
    let mut cursor_override: Option<String> = None;
    while !stop.is_cancelled() {
        let cursor = match cursor_override.take() {
            Some(cursor) => cursor,
            None => match store.cursor(feed.source).await {
                Ok(cursor) => cursor,
                Err(error) => {
                    tracing::warn!(source = feed.source, %error, "reading the feed cursor failed");
                    pause(&stop, settings.reconnect).await;
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
                Some(Ok(delivery)) => {
                    if let Err(error) = process(
                        &store,
                        notifier.as_ref(),
                        &delivery,
                        settings,
                        &metrics,
                        &stop,
                    )
                    .await
                    {
                        tracing::warn!(source = feed.source, %error, "recording an event failed; resubscribing");
                        break;
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(source = feed.source, %error, "the feed failed; resubscribing");
                    break;
                }
                None => break,
            }
        }
        pause(&stop, settings.reconnect).await;
    }
}

/// Consumes one producer's JetStream stream through the durable consumer
/// until `stop`: each message is processed as a feed's event is, then
/// acknowledged; one not acknowledged (a crash, a failed write) is
/// redelivered by JetStream and dropped by the inbox if it was recorded.
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
                    let processed = process(
                        &store,
                        notifier.as_ref(),
                        &message.delivery,
                        settings,
                        &metrics,
                        &stop,
                    )
                    .await;
                    let acked = match processed {
                        Ok(()) => message.ack().await,
                        Err(error) => Err(FeedError::Unavailable(error.to_string())),
                    };
                    if let Err(error) = acked {
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
) -> Result<(), crate::error::NotificationError> {
    if store.seen(&delivery.event_id).await? {
        metrics.count("duplicate");
        return store.skip(&delivery.source, &delivery.cursor).await;
    }
    let notification = match &delivery.notification {
        Ok(None) => return store.skip(&delivery.source, &delivery.cursor).await,
        Ok(Some(notification)) => notification,
        Err(error) => {
            tracing::error!(event_id = %delivery.event_id, %error, "an event cannot be processed");
            metrics.count("dead_letter");
            return store.record_dead(delivery, 1, error).await;
        }
    };
    let mut backoff = settings.retry_base;
    let mut attempt = 1;
    loop {
        match notifier.send(notification).await {
            Ok(()) => {
                let fresh = store.record_sent(delivery, notification).await?;
                metrics.count(if fresh { "sent" } else { "duplicate" });
                return Ok(());
            }
            Err(error) if attempt >= settings.max_attempts.max(1) => {
                tracing::error!(
                    event_id = %delivery.event_id,
                    attempt,
                    %error,
                    "notification failed on every try; dead-lettered"
                );
                metrics.count("dead_letter");
                return store
                    .record_dead(delivery, attempt, &error.to_string())
                    .await;
            }
            Err(error) => {
                tracing::warn!(event_id = %delivery.event_id, attempt, %error, "notification failed; retrying");
                attempt += 1;
                pause(stop, backoff).await;
                if stop.is_cancelled() {
                    // Not recorded: the next start delivers it again.
                    return Ok(());
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
