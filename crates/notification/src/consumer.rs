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
//! Per batch (what the feed delivers within [`GATHER`] of a batch's first
//! event, up to [`BATCH`] events): events
//! already in the inbox are skipped (one lookup); each other one is sent
//! through the notifier, up to `max_attempts` times with a doubling backoff;
//! then the batch's inbox rows, notifications and the feed's cursor are
//! written in one transaction (one per [`RECORD_WITHIN`] of sending, for a
//! slow notifier). An event still failing after its tries is
//! written as a dead letter instead, in the same transaction, and the feed
//! moves on. A crash anywhere leaves the cursor after the last batch fully
//! recorded: the next start delivers the rest again, and the inbox drops
//! what was recorded already. The notifier may see an event twice (sent,
//! then a crash before recording): see [`crate::notifier`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio_util::sync::CancellationToken;

use crate::domain::Delivery;
use crate::downstream::{Feed, FeedError};
use crate::notifier::Notifier;
use crate::store::{NotificationStore, Processed};

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
        let mut stream = std::pin::pin!(batches(stream));
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
            let Some(items) = next else { break };
            let (deliveries, failure) = until_error(items);
            let deliveries: Vec<&Delivery> = deliveries.iter().collect();
            match process(store, notifier, &deliveries, settings, metrics, stop).await {
                Ok(outcomes) if outcomes.contains(&Outcome::Stopped) => return,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(source = feed.source, %error, "recording events failed; resubscribing");
                    break;
                }
            }
            if let Some(error) = failure {
                tracing::warn!(source = feed.source, %error, "the feed failed; resubscribing");
                break;
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
        let mut stream = std::pin::pin!(batches(stream));
        'messages: loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = stream.next() => next,
            };
            let Some(items) = next else { break };
            let (messages, failure) = until_error(items);
            let deliveries: Vec<&Delivery> = messages.iter().map(|m| &m.delivery).collect();
            let processing = process(
                &store,
                notifier.as_ref(),
                &deliveries,
                settings,
                &metrics,
                &stop,
            );
            let outcomes = match in_progress(&messages, processing).await {
                Ok(outcomes) => outcomes,
                Err(error) => {
                    tracing::warn!(source = feed.source, %error, "recording events failed; they will be redelivered");
                    break;
                }
            };
            for (message, outcome) in messages.iter().zip(outcomes) {
                if outcome == Outcome::Stopped {
                    return;
                }
                if let Err(error) = settle(&store, message, outcome).await {
                    tracing::warn!(source = feed.source, %error, "an event was not acknowledged; it will be redelivered");
                    break 'messages;
                }
            }
            if let Some(error) = failure {
                tracing::warn!(source = feed.source, %error, "the JetStream stream failed; reconnecting");
                break;
            }
        }
        pause(&stop, settings.reconnect).await;
    }
}

/// Awaits `processing` of `messages`, telling JetStream every third of
/// their ack wait that they are in progress, so slow tries are not
/// redelivered (to another replica) meanwhile.
async fn in_progress<T>(
    messages: &[crate::downstream::JetStreamDelivery],
    processing: impl std::future::Future<Output = T>,
) -> T {
    let mut processing = std::pin::pin!(processing);
    let mut keepalive = tokio::time::interval(crate::downstream::ACK_WAIT / 3);
    keepalive.tick().await;
    loop {
        tokio::select! {
            done = &mut processing => return done,
            _ = keepalive.tick() => {
                for message in messages {
                    if let Err(error) = message.in_progress().await {
                        tracing::warn!(event_id = %message.delivery.event_id, %error, "cannot extend the ack wait; JetStream may redeliver the event meanwhile");
                    }
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

/// The most events processed, and recorded in one transaction, at once.
pub const BATCH: usize = 32;

/// How long a batch gathers events after its first one. Under load a feed
/// delivers a few events every few milliseconds; gathering them for this
/// long makes one inbox lookup and one recording transaction serve many
/// (each is a round trip to the database's worker thread, the suite's main
/// cost), for at most this much delay on a notification.
pub const GATHER: Duration = Duration::from_millis(25);

/// `stream`'s items in batches of up to [`BATCH`], each gathered for at
/// most [`GATHER`] from its first item.
fn batches<S: futures::Stream>(stream: S) -> impl futures::Stream<Item = Vec<S::Item>> {
    tokio_stream::StreamExt::chunks_timeout(stream, BATCH, GATHER)
}

/// The items before the first error, and that error.
fn until_error<T, E>(items: Vec<Result<T, E>>) -> (Vec<T>, Option<E>) {
    let mut ok = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Ok(item) => ok.push(item),
            Err(error) => return (ok, Some(error)),
        }
    }
    (ok, None)
}

/// How long notifications may be sent before they are recorded: a batch is
/// recorded in one transaction once its sends have taken this long (and at
/// its end). A fast notifier's batch is one transaction; a slow one's (an
/// SMTP server, a webhook) is recorded one send at a time, so a crash never
/// repeats more than about this much sending.
pub const RECORD_WITHIN: Duration = Duration::from_millis(20);

/// Processes a batch of one feed's deliveries in order: looks them up in
/// the inbox (one query), notifies each new one with retries, and records
/// them and moves the feed's cursor past them in one transaction per
/// [`RECORD_WITHIN`] of sending. Returns one outcome per delivery. A
/// shutdown during one's retries records those before it; it and the rest
/// are `Stopped`: not recorded, so the next start delivers them again. An
/// error is the store's: the caller resubscribes from the stored cursor, so
/// the notifier may see what was sent and not yet recorded again (see
/// [`crate::notifier`]).
pub async fn process(
    store: &NotificationStore,
    notifier: &dyn Notifier,
    deliveries: &[&Delivery],
    settings: ConsumerSettings,
    metrics: &ConsumerMetrics,
    stop: &CancellationToken,
) -> Result<Vec<Outcome>, crate::error::NotificationError> {
    // Events that notify nobody never reach the inbox: they are skipped
    // without a lookup (JetStream delivers every event of a stream).
    let wanted: Vec<&str> = deliveries
        .iter()
        .filter(|delivery| !matches!(delivery.notification, Ok(None)))
        .map(|delivery| delivery.event_id.as_str())
        .collect();
    let mut seen = store.seen(&wanted).await?;
    let mut outcomes = Vec::with_capacity(deliveries.len());
    let mut recorded = 0;
    let mut sending = Instant::now();
    for delivery in deliveries {
        let outcome = match &delivery.notification {
            Ok(None) => Outcome::Skipped,
            _ if !seen.insert(delivery.event_id.clone()) => Outcome::Duplicate,
            Err(error) => {
                tracing::error!(event_id = %delivery.event_id, %error, "an event cannot be processed");
                Outcome::Dead {
                    attempts: 1,
                    error: error.clone(),
                }
            }
            Ok(Some(notification)) => {
                notify(notifier, notification, delivery, settings, stop).await
            }
        };
        if outcome == Outcome::Stopped {
            break;
        }
        outcomes.push(outcome);
        if sending.elapsed() >= RECORD_WITHIN {
            recorded = record(store, deliveries, &mut outcomes, recorded, metrics).await?;
            sending = Instant::now();
        }
    }
    record(store, deliveries, &mut outcomes, recorded, metrics).await?;
    outcomes.resize(deliveries.len(), Outcome::Stopped);
    Ok(outcomes)
}

/// Records the processed deliveries from `from` on (one feed's, in order;
/// `outcomes` holds one per processed delivery) in one transaction, moving
/// the cursor past the last; a sent event another delivery recorded first
/// becomes a `Duplicate`. Returns how many are recorded now.
async fn record(
    store: &NotificationStore,
    deliveries: &[&Delivery],
    outcomes: &mut [Outcome],
    from: usize,
    metrics: &ConsumerMetrics,
) -> Result<usize, crate::error::NotificationError> {
    let done = outcomes.len();
    let (deliveries, outcomes) = (&deliveries[from..done], &mut outcomes[from..]);
    let Some(last) = deliveries.last() else {
        return Ok(done);
    };
    let mut written = Vec::new();
    let mut batch = Vec::new();
    for (i, (delivery, outcome)) in deliveries.iter().zip(outcomes.iter()).enumerate() {
        let processed = match (outcome, &delivery.notification) {
            (Outcome::Sent, Ok(Some(notification))) => Processed::Sent(notification),
            (Outcome::Dead { attempts, error }, _) => Processed::Dead {
                attempts: *attempts,
                error,
            },
            _ => continue,
        };
        written.push(i);
        batch.push((*delivery, processed));
    }
    let fresh = store.record(&last.source, &last.cursor, &batch).await?;
    drop(batch);
    for (i, fresh) in written.into_iter().zip(fresh) {
        if outcomes[i] == Outcome::Sent && !fresh {
            outcomes[i] = Outcome::Duplicate;
        }
    }
    for outcome in outcomes.iter() {
        match outcome {
            Outcome::Sent => metrics.count("sent"),
            Outcome::Duplicate => metrics.count("duplicate"),
            Outcome::Dead { .. } => metrics.count("dead_letter"),
            Outcome::Skipped | Outcome::Stopped => {}
        }
    }
    Ok(done)
}

/// Sends `notification` for `delivery`, up to `max_attempts` times with a
/// doubling backoff: `Sent`, `Dead` after the last try, or `Stopped` when
/// shutdown comes between tries.
async fn notify(
    notifier: &dyn Notifier,
    notification: &crate::domain::Notification,
    delivery: &Delivery,
    settings: ConsumerSettings,
    stop: &CancellationToken,
) -> Outcome {
    let mut backoff = settings.retry_base;
    let mut attempt = 1;
    loop {
        match notifier.send(notification).await {
            Ok(()) => return Outcome::Sent,
            Err(error) if attempt >= settings.max_attempts.max(1) => {
                tracing::error!(
                    event_id = %delivery.event_id,
                    attempt,
                    %error,
                    "notification failed on every try; dead-lettered"
                );
                return Outcome::Dead {
                    attempts: attempt,
                    error: error.to_string(),
                };
            }
            Err(error) => {
                tracing::warn!(event_id = %delivery.event_id, attempt, %error, "notification failed; retrying");
                attempt += 1;
                pause(stop, backoff).await;
                if stop.is_cancelled() {
                    return Outcome::Stopped;
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
