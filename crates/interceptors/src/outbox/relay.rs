//! The NATS JetStream relay: publishes a service's committed outbox rows, in
//! position order, to the stream `AGORA_<CONTEXT>` under the subject
//! `agora.<context>.<EventName>` (the event's type), each with
//! `Nats-Msg-Id` = the event id, waits for the broker's PubAck, and only
//! then marks the row published.
//!
//! - **No loss, no duplicates downstream.** A row is marked after its
//!   PubAck, so a crash between the two publishes it again on restart;
//!   JetStream drops the repeat inside the stream's duplicate window
//!   ([`DUPLICATE_WINDOW`]) by its message id.
//! - **One publisher per service.** On PostgreSQL a relay publishes only
//!   while it holds the `outbox_relay` row (`FOR UPDATE SKIP LOCKED`): other
//!   replicas skip it and wait, so rows are never published concurrently and
//!   always in order. SQLite has one process.
//! - **Wakes on commit** (the outbox's commit channel), re-reading every
//!   [`super::FOLLOW_FALLBACK`] for other replicas' commits.
//! - **Broker down:** rows wait in the outbox; the relay logs that it is
//!   behind, counts the error, retries with backoff; health is unaffected.
//!   `agora_outbox_relay_lag_seconds` says how old the oldest unpublished
//!   row is.
//! - **The stream** is created when missing: file storage, one replica (set
//!   replicas and placement on the server for production), limits retention
//!   by age ([`STREAM_MAX_AGE`]). JetStream's file store syncs to disk on an
//!   interval (2 minutes by default on nats-server 2.9/2.10), so a PubAck'd
//!   message can be lost on power failure of a single-node server: run a
//!   3-replica stream for durability.

use std::sync::Arc;
use std::time::Duration;

pub use async_nats;
use async_nats::jetstream;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

pub use super::RelaySettings;
use super::{FOLLOW_FALLBACK, Outbox};
use crate::api::time::now_micros;
use crate::db::Backend;
use crate::metrics::GrpcMetrics;

/// How long JetStream remembers message ids to drop duplicates.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How long the stream keeps messages.
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Rows published per claim.
const BATCH: i64 = 100;

/// A test hook: called with each event id after its PubAck and before the
/// row is marked; `true` stops the relay right there, as a crash would.
pub type RelayFault = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The relay's metrics.
#[derive(Clone, Debug, Default)]
pub struct RelayMetrics {
    published: Counter,
    errors: Counter,
    lag: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl RelayMetrics {
    /// Reports `agora_events_published_total`,
    /// `agora_outbox_publish_errors_total` and
    /// `agora_outbox_relay_lag_seconds` on `metrics`.
    pub fn register(metrics: &GrpcMetrics) -> Self {
        let this = Self::default();
        metrics.register(
            "agora_events_published",
            "Outbox events published to NATS JetStream (PubAck received)",
            this.published.clone(),
        );
        metrics.register(
            "agora_outbox_publish_errors",
            "Failed attempts to publish outbox events to NATS JetStream",
            this.errors.clone(),
        );
        metrics.register(
            "agora_outbox_relay_lag_seconds",
            "Age of the oldest outbox event not yet published to NATS (0: none)",
            this.lag.clone(),
        );
        this
    }
}

/// Connects to NATS and creates the context's stream if missing.
pub async fn connect(settings: &RelaySettings, source: &str) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(settings.url.as_str())
        .await?;
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: settings.stream_name(source),
        subjects: vec![settings.stream_subjects(source)],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: STREAM_MAX_AGE,
        num_replicas: 1,
        ..Default::default()
    })
    .await?;
    Ok(js)
}

/// Publishes `outbox` to NATS until `stop`, surviving the broker
/// going away. `fault` (tests) may stop it between a PubAck and the mark.
pub async fn run(
    outbox: Outbox,
    settings: RelaySettings,
    metrics: RelayMetrics,
    fault: Option<RelayFault>,
    stop: CancellationToken,
) {
    let mut commits = outbox.commits();
    let mut backoff = Duration::from_millis(100);
    let mut js: Option<jetstream::Context> = None;
    loop {
        commits.borrow_and_update();
        update_lag(&outbox, &metrics).await;
        let outcome = match &js {
            Some(context) => {
                publish_batch(&outbox, &settings, context, &metrics, fault.as_ref()).await
            }
            None => match connect(&settings, outbox.source()).await {
                Ok(context) => {
                    tracing::info!(
                        url = %settings.url,
                        stream = settings.stream_name(outbox.source()),
                        "event relay connected to NATS"
                    );
                    js = Some(context);
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Err(error) => Err(error),
            },
        };
        match outcome {
            Ok(Step::Crashed) => return,
            Ok(Step::More) => {
                backoff = Duration::from_millis(100);
                continue;
            }
            Ok(Step::Idle) => {
                backoff = Duration::from_millis(100);
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = commits.changed() => {}
                    () = tokio::time::sleep(FOLLOW_FALLBACK) => {}
                }
            }
            Err(error) => {
                metrics.errors.inc();
                tracing::warn!(
                    error = %format!("{error:#}"),
                    retry_in = ?backoff,
                    "event relay is behind: cannot publish to NATS; events wait in the outbox"
                );
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// What one claim did.
enum Step {
    /// Published a full batch: more may wait.
    More,
    /// Nothing (more) to publish, or another replica holds the claim.
    Idle,
    /// The fault hook stopped it.
    Crashed,
}

async fn update_lag(outbox: &Outbox, metrics: &RelayMetrics) {
    let oldest: Result<Option<i64>, _> =
        sqlx::query_scalar("SELECT MIN(created_at) FROM outbox WHERE published_at IS NULL")
            .fetch_one(outbox.database().pool())
            .await;
    if let Ok(oldest) = oldest {
        let lag = oldest.map_or(0.0, |created| {
            (now_micros().saturating_sub(created)).max(0) as f64 / 1e6
        });
        metrics.lag.set(lag);
    }
}

async fn publish_batch(
    outbox: &Outbox,
    settings: &RelaySettings,
    js: &jetstream::Context,
    metrics: &RelayMetrics,
    fault: Option<&RelayFault>,
) -> anyhow::Result<Step> {
    let db = outbox.database();
    // PostgreSQL: hold the claim row for the batch; SQLite: one process.
    let mut claim = None;
    if db.backend() == Backend::Postgres {
        let mut tx = db.pool().begin().await?;
        let held: Option<i64> =
            sqlx::query_scalar("SELECT id FROM outbox_relay WHERE id = 1 FOR UPDATE SKIP LOCKED")
                .fetch_optional(&mut *tx)
                .await?;
        if held.is_none() {
            return Ok(Step::Idle);
        }
        claim = Some(tx);
    }
    let rows = match claim.as_mut() {
        Some(tx) => unpublished().fetch_all(&mut **tx).await?,
        None => unpublished().fetch_all(db.pool()).await?,
    };
    let mut published = Vec::new();
    let mut failure = None;
    for row in &rows {
        let position: i64 = row.try_get("position")?;
        let event_id: String = row.try_get("event_id")?;
        let subject = settings.subject(&row.try_get::<String, _>("event_type")?);
        let payload: Vec<u8> = row.try_get("event")?;
        let ack = async {
            let publish = jetstream::context::Publish::build()
                .message_id(&event_id)
                .payload(payload.into());
            js.send_publish(subject, publish).await?.await
        }
        .await;
        match ack {
            Ok(ack) => {
                if ack.duplicate {
                    tracing::info!(%event_id, "NATS already had this event (a republish after a crash); dropped as a duplicate");
                }
                if fault.is_some_and(|crash| crash(&event_id)) {
                    return Ok(Step::Crashed);
                }
                metrics.published.inc();
                published.push(position);
            }
            Err(error) => {
                failure =
                    Some(anyhow::Error::new(error).context(format!("publishing event {event_id}")));
                break;
            }
        }
    }
    if let Some(last) = published.last() {
        let mark = sqlx::query(
            "UPDATE outbox SET published_at = $1 WHERE position <= $2 AND published_at IS NULL",
        )
        .bind(now_micros())
        .bind(*last);
        match claim.as_mut() {
            Some(tx) => mark.execute(&mut **tx).await?,
            None => mark.execute(db.writer()).await?,
        };
    }
    if let Some(tx) = claim {
        tx.commit().await?;
    }
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(if rows.len() as i64 == BATCH {
        Step::More
    } else {
        Step::Idle
    })
}

fn unpublished() -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "SELECT position, event_id, event_type, event FROM outbox \
         WHERE published_at IS NULL ORDER BY position LIMIT $1",
    )
    .bind(BATCH)
}
