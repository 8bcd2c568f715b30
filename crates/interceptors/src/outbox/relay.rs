//! The NATS JetStream relay: publishes a service's committed outbox rows, in
//! position order, to the stream `AGORA_<CONTEXT>` under the subject
//! `agora.<context>.<EventName>` (the event's type), each with
//! `Nats-Msg-Id` = the event id, and marks rows published once the broker
//! acknowledged them.
//!
//! - **Pipelined, still in order.** A round reads up to [`BATCH`] rows and
//!   sends them back to back on the one connection, then awaits the PubAcks
//!   in order (one round trip a round, not one an event). Every message but
//!   the round's first carries `Nats-Expected-Last-Msg-Id` = the previous
//!   event's id, so if one is lost in flight (a dropped connection) the
//!   broker refuses the ones after it instead of storing them ahead of it;
//!   the next round starts again from the first unacknowledged row, with
//!   nothing in flight. Only the acknowledged prefix of a round counts.
//! - **No loss, no duplicates downstream.** A row is marked only after its
//!   PubAck, so a crash before the mark publishes it again on restart;
//!   JetStream drops the repeat inside the stream's duplicate window
//!   ([`DUPLICATE_WINDOW`]) by its message id (it checks the id before any
//!   expectation, so a republished run is acknowledged as duplicates).
//! - **Marks are batched.** How far the broker has the rows is one number,
//!   `outbox_relay.published_through`. Writing it is a write to the
//!   service's database, which the saga's own writes queue for (SQLite has
//!   one writer), so the relay moves it at most every [`MARK_EVERY`] (and
//!   when it stops), remembering in memory how far it got. A crash
//!   republishes at most that much, which the broker drops.
//! - **One publisher per service.** On PostgreSQL a relay publishes only
//!   while it holds the `outbox_relay` row (`FOR UPDATE SKIP LOCKED`): other
//!   replicas skip it and wait, so rows are never published concurrently and
//!   always in order. SQLite has one process.
//! - **Wakes on commit** (the outbox's commit channel), at most every
//!   [`RELAY_LINGER`] so that a round under load takes many commits' rows,
//!   re-reading every [`super::FOLLOW_FALLBACK`] for other replicas'
//!   commits.
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
use std::time::{Duration, Instant};

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

/// Rows read and sent per round.
const BATCH: i64 = 256;

/// The shortest time between two rounds prompted by commits: under load a
/// round then takes every commit of the last 50 ms, and the broker and
/// this client handle one burst of messages and PubAcks instead of five.
/// Each wake-up of the relay, the connection's task and the broker's
/// goroutines costs more than a message does, and they share the
/// service's cores: at 10 ms (the feed's [`super::FOLLOW_LINGER`]) the
/// broker spent about twice the CPU per order and orders/s were about a
/// tenth lower (BENCHMARKS.md, "Domain events"). It bounds what the relay
/// adds to an event's way to NATS; an idle relay publishes at once.
pub const RELAY_LINGER: Duration = Duration::from_millis(50);

/// How long acknowledged rows may wait to be marked published.
pub const MARK_EVERY: Duration = Duration::from_millis(250);

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

    fn set_lag_since(&self, created_at: Option<i64>) {
        let lag = created_at.map_or(0.0, |created| {
            (now_micros().saturating_sub(created)).max(0) as f64 / 1e6
        });
        self.lag.set(lag);
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
    let mut relay = Relay {
        outbox,
        settings,
        metrics,
        fault,
        js: None,
        acked_through: 0,
        marked_through: 0,
        read_published_through: false,
        last_mark: Instant::now(),
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        commits.borrow_and_update();
        let started = Instant::now();
        match relay.round().await {
            Ok(Round::Crashed) => return,
            Ok(Round::Full) => backoff = Duration::from_millis(100),
            Ok(Round::Drained) => {
                backoff = Duration::from_millis(100);
                // Quiet: wake on the next commit, or when the marks are due.
                let wait = if relay.acked_through > relay.marked_through {
                    MARK_EVERY.saturating_sub(relay.last_mark.elapsed())
                } else {
                    FOLLOW_FALLBACK
                };
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = commits.changed() => super::linger(started, RELAY_LINGER, &stop).await,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(error) => {
                relay.metrics.errors.inc();
                relay.measure_lag().await;
                tracing::warn!(
                    error = %format!("{error:#}"),
                    retry_in = ?backoff,
                    "event relay is behind: cannot publish to NATS; events wait in the outbox"
                );
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if stop.is_cancelled() {
            break;
        }
    }
    // Stopping: mark what the broker has, so a restart republishes nothing.
    if let Err(error) = relay.mark_on_writer().await {
        tracing::warn!(%error, "marking published events at shutdown failed; they will be republished and dropped as duplicates");
    }
}

/// What one round did.
enum Round {
    /// Published a full batch: more may wait.
    Full,
    /// Nothing (more) to publish, or another replica holds the claim.
    Drained,
    /// The fault hook stopped it.
    Crashed,
}

/// One unpublished outbox row.
struct Unpublished {
    position: i64,
    event_id: String,
    event_type: String,
    event: Vec<u8>,
    created_at: i64,
}

/// The relay's state between rounds.
struct Relay {
    outbox: Outbox,
    settings: RelaySettings,
    metrics: RelayMetrics,
    fault: Option<RelayFault>,
    js: Option<jetstream::Context>,
    /// The last position the broker acknowledged (to this process).
    acked_through: i64,
    /// The last position this process marked published.
    marked_through: i64,
    /// Whether `outbox_relay.published_through` was read since the start
    /// (SQLite: once is enough).
    read_published_through: bool,
    last_mark: Instant,
}

impl Relay {
    /// Connects if needed, then publishes the next batch of rows.
    async fn round(&mut self) -> anyhow::Result<Round> {
        if self.js.is_none() {
            let context = connect(&self.settings, self.outbox.source()).await?;
            tracing::info!(
                url = %self.settings.url,
                stream = self.settings.stream_name(self.outbox.source()),
                "event relay connected to NATS"
            );
            self.js = Some(context);
        }
        let db = self.outbox.database().clone();
        // PostgreSQL: hold the claim row for the round, and learn from it
        // how far the broker has the rows (another replica may have gone
        // on); SQLite: one process, which reads that once.
        let mut claim = None;
        let published_through = if db.backend() == Backend::Postgres {
            let mut tx = db.pool().begin().await?;
            let held: Option<i64> = sqlx::query_scalar(
                "SELECT published_through FROM outbox_relay WHERE id = 1 FOR UPDATE SKIP LOCKED",
            )
            .fetch_optional(&mut *tx)
            .await?;
            let Some(published_through) = held else {
                return Ok(Round::Drained);
            };
            claim = Some(tx);
            Some(published_through)
        } else if !self.read_published_through {
            self.read_published_through = true;
            Some(
                sqlx::query_scalar("SELECT published_through FROM outbox_relay WHERE id = 1")
                    .fetch_one(db.pool())
                    .await?,
            )
        } else {
            None
        };
        if let Some(published_through) = published_through {
            self.acked_through = self.acked_through.max(published_through);
            self.marked_through = self.marked_through.max(published_through);
        }
        let query = sqlx::query(
            "SELECT position, event_id, event_type, sequence, event, created_at FROM outbox \
             WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(self.acked_through)
        .bind(BATCH);
        let rows = match claim.as_mut() {
            Some(tx) => query.fetch_all(&mut **tx).await?,
            None => query.fetch_all(db.pool()).await?,
        };
        let rows = rows
            .iter()
            .map(|row| {
                Ok(Unpublished {
                    position: row.try_get("position")?,
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("event_type")?,
                    event: super::with_sequence(row.try_get("event")?, row.try_get("sequence")?),
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        self.metrics
            .set_lag_since(rows.first().map(|row| row.created_at));
        let published = self.publish(&rows).await;
        if matches!(published, Ok(Round::Crashed)) {
            return Ok(Round::Crashed);
        }
        if self.marks_due() {
            match claim.as_mut() {
                Some(tx) => self.mark(&mut **tx).await?,
                None => self.mark(db.writer()).await?,
            }
        }
        if let Some(tx) = claim {
            tx.commit().await?;
        }
        published?;
        Ok(if rows.len() as i64 == BATCH {
            Round::Full
        } else {
            Round::Drained
        })
    }

    /// Sends `rows` back to back, then awaits their PubAcks in order,
    /// moving `acked_through` over the acknowledged prefix.
    async fn publish(&mut self, rows: &[Unpublished]) -> anyhow::Result<Round> {
        let Some(js) = self.js.as_ref() else {
            return Ok(Round::Drained);
        };
        let mut pending = Vec::with_capacity(rows.len());
        let mut previous: Option<&str> = None;
        let mut failure = None;
        for row in rows {
            let mut publish = jetstream::context::Publish::build()
                .message_id(&row.event_id)
                .payload(row.event.clone().into());
            if let Some(previous) = previous {
                publish = publish.expected_last_message_id(previous);
            }
            match js
                .send_publish(self.settings.subject(&row.event_type), publish)
                .await
            {
                Ok(ack) => pending.push(ack),
                Err(error) => {
                    failure = Some(anyhow::Error::new(error));
                    break;
                }
            }
            previous = Some(&row.event_id);
        }
        let mut duplicates = 0;
        for (row, ack) in rows.iter().zip(pending) {
            match ack.await {
                Ok(ack) => {
                    duplicates += usize::from(ack.duplicate);
                    if self
                        .fault
                        .as_ref()
                        .is_some_and(|crash| crash(&row.event_id))
                    {
                        return Ok(Round::Crashed);
                    }
                    self.metrics.published.inc();
                    self.acked_through = row.position;
                }
                Err(error) => {
                    failure = Some(
                        anyhow::Error::new(error)
                            .context(format!("publishing event {}", row.event_id)),
                    );
                    break;
                }
            }
        }
        if duplicates > 0 {
            tracing::info!(
                duplicates,
                "NATS already had events this relay republished (after a crash or a failover); dropped as duplicates"
            );
        }
        match failure {
            // The connection may be gone: reconnect before the next round.
            Some(error) => {
                self.js = None;
                Err(error)
            }
            None => Ok(Round::Drained),
        }
    }

    fn marks_due(&self) -> bool {
        self.acked_through > self.marked_through && self.last_mark.elapsed() >= MARK_EVERY
    }

    /// Marks the acknowledged rows published, on `executor`.
    async fn mark<'c, E>(&mut self, executor: E) -> Result<(), sqlx::Error>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        sqlx::query(
            "UPDATE outbox_relay SET published_through = $1 \
             WHERE id = 1 AND published_through < $1",
        )
        .bind(self.acked_through)
        .execute(executor)
        .await?;
        self.marked_through = self.acked_through;
        self.last_mark = Instant::now();
        Ok(())
    }

    /// Marks what is acknowledged and unmarked, outside a round.
    async fn mark_on_writer(&mut self) -> Result<(), sqlx::Error> {
        if self.acked_through > self.marked_through {
            let db = self.outbox.database().clone();
            self.mark(db.writer()).await?;
        }
        Ok(())
    }

    /// Sets the lag from the table, when a round could not run.
    async fn measure_lag(&self) {
        let oldest: Result<Option<i64>, _> = sqlx::query_scalar(
            "SELECT created_at FROM outbox WHERE position > $1 \
             AND position > (SELECT published_through FROM outbox_relay WHERE id = 1) \
             ORDER BY position LIMIT 1",
        )
        .bind(self.acked_through)
        .fetch_optional(self.outbox.database().pool())
        .await;
        if let Ok(oldest) = oldest {
            self.metrics.set_lag_since(oldest);
        }
    }
}
