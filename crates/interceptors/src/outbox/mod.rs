//! The transactional outbox every service writes its domain events to, and
//! the `agora.events.v1.EventFeedService` that serves them.
//!
//! **Writing.** A service appends its events with [`Outbox::append`] inside
//! the transaction of the state change that causes them, as the last writes
//! before the commit (or with [`Outbox::execute_and_append`], together with
//! the transaction's last statement), then calls [`Outbox::committed`] once
//! the commit succeeded. A change that commits therefore always has its
//! events, and one that rolls back never has. Each service's migrations create the tables
//! (`outbox`, `outbox_head`, `outbox_sequences`, `outbox_relay`), identical
//! in every service.
//!
//! **Order.** Every event gets a *position*, handed out in commit order with
//! no gaps inside the writing transaction: on PostgreSQL from the one-row
//! `outbox_head` counter, whose row stays locked until that transaction
//! ends (writers of events queue on it for the length of their commit); on
//! SQLite, which has one writer, as one past the highest position written.
//! So a reader that has seen position `p` never later finds a committed
//! event below `p`. That is what makes the position a safe cursor. Each
//! event also gets a per-aggregate `sequence` (1, 2, 3 … per subject) from
//! `outbox_sequences`. A transaction's events are appended in one round
//! trip to the database on SQLite (two statements per event in one query;
//! one statement per event on PostgreSQL), so the sequence is assigned
//! there and kept in its own column: the stored `event` bytes lack it, and
//! every reader merges it in.
//!
//! **Followers** ([`Outbox::follow`], the feed) wake on this process's
//! commits through a `tokio::sync::watch` channel (a wake-up is never lost:
//! the channel remembers it until read), at most every [`FOLLOW_LINGER`]
//! (the relay: [`relay::RELAY_LINGER`]), and re-read the table every
//! [`FOLLOW_FALLBACK`] for commits made by other replicas.
//!
//! **Retention.** [`Outbox::prune`] deletes events older than the retention
//! (`AGORA_EVENT_RETENTION`), published or not once they are that old, and
//! records the last pruned position, so a cursor from before it is refused
//! (OUT_OF_RANGE) instead of silently skipping events.

mod feed;
pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use agora_proto::events::v1 as pb;
use agora_proto::events::v1::event::Payload;
use futures::TryStreamExt;
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use sqlx::Row;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::time::{now_micros, timestamp_from_micros};
use crate::db::{AnyQuery, Backend, Database};
use crate::metrics::GrpcMetrics;

pub use feed::{EventFeed, FEED_POLICY, FeedServer};

/// How often a follower re-reads the outbox without a local wake-up, to see
/// what other replicas of the service committed.
pub const FOLLOW_FALLBACK: Duration = Duration::from_secs(1);

/// The shortest time between two reads of a follower (the feed's streams;
/// the relay waits [`relay::RELAY_LINGER`]) prompted by commits. Under load
/// commits come every millisecond or two, and a read per commit costs more
/// in wake-ups than in reading; waiting this long lets one read take many
/// commits' events. It bounds what it adds to an event's delivery; an idle
/// follower reads at once.
pub const FOLLOW_LINGER: Duration = Duration::from_millis(10);

/// Sleeps out what is left of `linger` ([`FOLLOW_LINGER`] for the feed,
/// [`relay::RELAY_LINGER`] for the relay) since `last_read`, or until
/// `stop`.
async fn linger(last_read: std::time::Instant, linger: Duration, stop: &CancellationToken) {
    let left = linger.saturating_sub(last_read.elapsed());
    if !left.is_zero() {
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(left) => {}
        }
    }
}

/// How often expired events are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Events deleted per transaction when pruning.
const PRUNE_CHUNK: i64 = 2000;

/// Appends one event on SQLite, as two statements (`$1` subject, `$2`
/// event id, `$3` type, `$4` the encoded event without its sequence, `$5`
/// time); [`sqlite_append_sql`] sends all of a transaction's events as one
/// query. SQLite has one writer, so the next position is simply one past
/// the highest written (never below the head's `position`, the counter
/// older rows used, or `pruned_through`, so a position is never reused
/// after pruning): no counter row is rewritten, one page fewer per commit.
const APPEND_SQLITE: &str = "\
    INSERT INTO outbox_sequences (subject, last_sequence) VALUES ($1, 1) \
        ON CONFLICT (subject) DO UPDATE SET last_sequence = outbox_sequences.last_sequence + 1; \
    INSERT INTO outbox (position, event_id, event_type, subject, sequence, event, created_at) VALUES ( \
        (SELECT MAX(head.position, head.pruned_through, COALESCE((SELECT MAX(position) FROM outbox), 0)) + 1 \
            FROM outbox_head head WHERE head.id = 1), \
        $2, $3, $1, (SELECT last_sequence FROM outbox_sequences WHERE subject = $1), $4, $5);";

/// The parameters of one event in [`APPEND_SQLITE`] and [`APPEND_POSTGRES`].
const APPEND_PARAMETERS: usize = 5;

/// The most events appended in one SQLite query: far more than a change
/// causes, and far fewer parameters than SQLite allows in one query.
const APPEND_CHUNK: usize = 64;

/// `count` events appended as one SQLite query (one round trip to the
/// connection's worker thread): [`APPEND_SQLITE`] once per event, the
/// `n`-th (from 0) with its parameters numbered from `after + 5n + 1`
/// (`after`: the parameters of a statement sent before them in the query).
fn sqlite_append_sql(after: usize, count: usize) -> String {
    let mut sql = String::with_capacity(count * APPEND_SQLITE.len());
    for n in 0..count {
        let mut rest = APPEND_SQLITE;
        while let Some(dollar) = rest.find('$') {
            sql.push_str(&rest[..=dollar]);
            rest = &rest[dollar + 1..];
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let parameter: usize = rest[..digits].parse().expect("a numbered parameter");
            sql.push_str(&(parameter + after + n * APPEND_PARAMETERS).to_string());
            rest = &rest[digits..];
        }
        sql.push_str(rest);
    }
    sql
}

/// One event as one PostgreSQL statement (a prepared statement holds only
/// one), sent once per event: the head's counter is taken first and its row
/// stays locked until the commit, so concurrent writers of events commit
/// in position order; the sequence's upsert reads from the head's update.
const APPEND_POSTGRES: &str = "\
    WITH head AS ( \
        UPDATE outbox_head SET position = position + 1 WHERE id = 1 RETURNING position \
    ), sequences AS ( \
        INSERT INTO outbox_sequences (subject, last_sequence) SELECT $1, 1 FROM head \
        ON CONFLICT (subject) DO UPDATE SET last_sequence = outbox_sequences.last_sequence + 1 \
        RETURNING last_sequence \
    ) \
    INSERT INTO outbox (position, event_id, event_type, subject, sequence, event, created_at) \
    SELECT head.position, $2, $3, $1, sequences.last_sequence, $4, $5 FROM head, sequences";

/// The stored bytes of an event with its `sequence` column merged in: a
/// protobuf message followed by another is their merge, so appending the
/// encoded sequence sets it without decoding the event.
pub(crate) fn with_sequence(mut stored: Vec<u8>, sequence: i64) -> Vec<u8> {
    pb::Event {
        sequence,
        ..Default::default()
    }
    .encode(&mut stored)
    .expect("a Vec grows as needed");
    stored
}

/// Where the relay publishes.
#[derive(Clone, Debug)]
pub struct RelaySettings {
    /// The NATS server, `nats://host:port`.
    pub url: String,
    /// Put before every subject and stream name (`AGORA_NATS_SUBJECT_PREFIX`).
    pub prefix: String,
}

impl RelaySettings {
    /// The stream of a context: `AGORA_ORDER` for `agora/order` (after the
    /// prefix, upper-cased, with `.` and `-` as `_`).
    pub fn stream_name(&self, source: &str) -> String {
        format!(
            "{}AGORA_{}",
            self.prefix,
            source.trim_start_matches("agora/")
        )
        .to_ascii_uppercase()
        .replace(['.', '-', ' ', '*', '>'], "_")
    }

    /// The subjects of a context's stream: `<prefix>agora.<context>.>`.
    pub fn stream_subjects(&self, source: &str) -> String {
        format!("{}{}.>", self.prefix, source.replace('/', "."))
    }

    /// The subject of an event of `event_type`: `<prefix><event_type>`.
    pub fn subject(&self, event_type: &str) -> String {
        format!("{}{event_type}", self.prefix)
    }
}

/// One event to append: what happened to which aggregate. The envelope (id,
/// source, type, time, sequence, trace context) is filled in by
/// [`Outbox::append`].
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// The id of the aggregate the event is about (CloudEvents `subject`).
    pub subject: String,
    /// What happened.
    pub payload: Payload,
}

impl NewEvent {
    /// An event about `subject`.
    pub fn new(subject: impl Into<String>, payload: Payload) -> Self {
        Self {
            subject: subject.into(),
            payload,
        }
    }
}

/// What [`Outbox::execute_and_append`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutedAndAppended {
    /// The rows the caller's statement affected (not the appends').
    pub rows_affected: u64,
    /// The events appended, for [`Outbox::committed`].
    pub appended: usize,
}

/// One event ready to append: the five parameters of [`APPEND_SQLITE`] and
/// [`APPEND_POSTGRES`].
struct EncodedEvent {
    subject: String,
    id: String,
    kind: &'static str,
    event: Vec<u8>,
    created_at: i64,
}

/// Binds `events`' parameters after `query`'s own.
fn bind_events(mut query: AnyQuery, events: impl IntoIterator<Item = EncodedEvent>) -> AnyQuery {
    for event in events {
        query = query
            .bind(event.subject)
            .bind(event.id)
            .bind(event.kind)
            .bind(event.event)
            .bind(event.created_at);
    }
    query
}

/// An event as stored, with its position.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Where it is in the outbox: the cursor after it.
    pub position: i64,
    /// The event.
    pub event: pb::Event,
}

impl StoredEvent {
    /// The cursor to resume after this event.
    pub fn cursor(&self) -> String {
        Cursor(self.position).to_string()
    }
}

/// A position in the outbox as a consumer holds it: opaque to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub i64);

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl std::str::FromStr for Cursor {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        s.strip_prefix('p')
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .map(Cursor)
            .ok_or(())
    }
}

/// The type of an event with this payload: `agora.<context>.<EventName>`,
/// which is also its NATS subject.
pub fn event_type(payload: &Payload) -> &'static str {
    match payload {
        Payload::OrderPlaced(_) => "agora.order.OrderPlaced",
        Payload::OrderConfirmed(_) => "agora.order.OrderConfirmed",
        Payload::OrderFailed(_) => "agora.order.OrderFailed",
        Payload::OrderCancelled(_) => "agora.order.OrderCancelled",
        Payload::PaymentCaptured(_) => "agora.payment.PaymentCaptured",
        Payload::PaymentRefunded(_) => "agora.payment.PaymentRefunded",
        Payload::PaymentFailed(_) => "agora.payment.PaymentFailed",
        Payload::StockReserved(_) => "agora.inventory.StockReserved",
        Payload::StockCommitted(_) => "agora.inventory.StockCommitted",
        Payload::StockReleased(_) => "agora.inventory.StockReleased",
        Payload::StockAdjusted(_) => "agora.inventory.StockAdjusted",
        Payload::StockLow(_) => "agora.inventory.StockLow",
        Payload::UserRegistered(_) => "agora.user.UserRegistered",
        Payload::UserDeleted(_) => "agora.user.UserDeleted",
    }
}

/// What a reader found after a cursor.
#[derive(Debug)]
pub enum Batch {
    /// Events after the cursor, oldest first (possibly none).
    Events(Vec<StoredEvent>),
    /// The cursor is older than retention: events after it were pruned.
    /// Resuming from `oldest` is possible, knowing events were missed.
    Expired {
        /// The oldest cursor still valid.
        oldest: Cursor,
    },
    /// The cursor is ahead of anything this outbox wrote: not one of its.
    Unknown,
}

/// A service's outbox. Cheap to clone: clones share the wake-up channel.
#[derive(Clone, Debug)]
pub struct Outbox {
    db: Database,
    source: &'static str,
    commits: Arc<watch::Sender<u64>>,
    written: Counter,
}

impl Outbox {
    /// The outbox of the `context` service (`"order"`, `"payment"` …) in
    /// `db`, whose migrations created the outbox tables.
    pub fn new(db: Database, context: &'static str) -> Self {
        let source: &'static str = Box::leak(format!("agora/{context}").into_boxed_str());
        Self {
            db,
            source,
            commits: Arc::new(watch::channel(0).0),
            written: Counter::default(),
        }
    }

    /// The CloudEvents `source` of this outbox's events (`agora/<context>`).
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Reports `agora_events_written_total` on `metrics`.
    pub fn register_metrics(&self, metrics: &GrpcMetrics) {
        metrics.register(
            "agora_events_written",
            "Domain events committed to this service's outbox",
            self.written.clone(),
        );
    }

    /// Appends `events` inside `tx`, the transaction of the change that
    /// causes them; call it as the transaction's last writes (on PostgreSQL
    /// it takes the outbox's position lock, held until the transaction
    /// ends), in one call per transaction (one round trip on SQLite).
    /// Returns how many were appended, for [`Outbox::committed`].
    pub async fn append(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        events: &[NewEvent],
    ) -> Result<usize, sqlx::Error> {
        if events.is_empty() {
            return Ok(0);
        }
        let encoded = self.encode(events);
        match self.db.backend() {
            Backend::Sqlite => {
                let mut encoded = encoded.into_iter().peekable();
                while encoded.peek().is_some() {
                    let chunk: Vec<_> = encoded.by_ref().take(APPEND_CHUNK).collect();
                    let sql = sqlite_append_sql(0, chunk.len());
                    bind_events(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk)
                        .execute(&mut **tx)
                        .await?;
                }
            }
            Backend::Postgres => {
                for event in encoded {
                    bind_events(sqlx::query(APPEND_POSTGRES), [event])
                        .execute(&mut **tx)
                        .await?;
                }
            }
        }
        Ok(events.len())
    }

    /// Executes `statement` (`sql`, numbering `parameters` parameters from
    /// `$1`, bound by `bind`) and then appends `events`, as
    /// [`Outbox::append`] does, in the same round trip on SQLite: the
    /// transaction's last statement and its events are one query, so events
    /// add no hand-off to the connection's thread to a transaction that
    /// holds the single writer. On PostgreSQL (one statement per prepared
    /// query) they are sent one after the other. Returns the rows the
    /// statement affected, for the caller's checks, and how many events
    /// were appended, for [`Outbox::committed`].
    pub async fn execute_and_append(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        sql: &str,
        parameters: usize,
        bind: impl FnOnce(AnyQuery) -> AnyQuery,
        events: &[NewEvent],
    ) -> Result<ExecutedAndAppended, sqlx::Error> {
        if self.db.backend() == Backend::Postgres
            || events.is_empty()
            || events.len() > APPEND_CHUNK
        {
            let rows_affected = bind(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())))
                .execute(&mut **tx)
                .await?
                .rows_affected();
            let appended = self.append(tx, events).await?;
            return Ok(ExecutedAndAppended {
                rows_affected,
                appended,
            });
        }
        let sql = format!("{sql}; {}", sqlite_append_sql(parameters, events.len()));
        let statement = bind(sqlx::query(sqlx::AssertSqlSafe(sql)));
        // One result per statement, the caller's first: `execute` would
        // sum them with the appends' own.
        let results: Vec<_> =
            sqlx::Executor::execute_many(&mut **tx, bind_events(statement, self.encode(events)))
                .try_collect()
                .await?;
        Ok(ExecutedAndAppended {
            rows_affected: results.first().map_or(0, |result| result.rows_affected()),
            appended: events.len(),
        })
    }

    /// `events` with their envelopes, encoded without their sequence (which
    /// the database assigns in the same round trip; readers merge it back
    /// in), ready to bind.
    fn encode(&self, events: &[NewEvent]) -> Vec<EncodedEvent> {
        let now = now_micros();
        let (traceparent, tracestate) = current_trace_context();
        events
            .iter()
            .map(|new| {
                let kind = event_type(&new.payload);
                let event = pb::Event {
                    id: uuid::Uuid::now_v7().to_string(),
                    source: self.source.to_owned(),
                    r#type: kind.to_owned(),
                    subject: new.subject.clone(),
                    time: Some(timestamp_from_micros(now)),
                    sequence: 0,
                    traceparent: traceparent.clone(),
                    tracestate: tracestate.clone(),
                    payload: Some(new.payload.clone()),
                };
                EncodedEvent {
                    subject: new.subject.clone(),
                    id: event.id.clone(),
                    kind,
                    event: event.encode_to_vec(),
                    created_at: now,
                }
            })
            .collect()
    }

    /// Tells followers that a transaction holding `appended` events (from
    /// [`Outbox::append`]) committed. Call it after the commit; a change
    /// without events need not call it.
    pub fn committed(&self, appended: usize) {
        if appended > 0 {
            self.written.inc_by(appended as u64);
            self.commits.send_modify(|generation| *generation += 1);
        }
    }

    /// A receiver that changes on every local commit with events.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Up to `limit` events after `after` (all of them when `after` is
    /// `None`: from the oldest kept), oldest first; or why there are none.
    pub async fn read_after(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Batch, sqlx::Error> {
        // A follower's usual read: positions have no gaps, so a first row
        // right after the cursor proves it neither expired nor unknown, and
        // one query is enough.
        if let Some(cursor) = after {
            let events = decode_events(
                &sqlx::query(
                    "SELECT position, sequence, event FROM outbox WHERE position > $1 ORDER BY position LIMIT $2",
                )
                .bind(cursor.0)
                .bind(i64::from(limit))
                .fetch_all(self.db.pool())
                .await?,
            )?;
            if events
                .first()
                .is_some_and(|first| first.position == cursor.0 + 1)
            {
                return Ok(Batch::Events(events));
            }
        }
        // Otherwise one transaction: the horizon and the rows from one
        // snapshot.
        let mut tx = self.db.pool().begin().await?;
        // The last position written: the head's counter (PostgreSQL), or
        // the highest row (SQLite, which does not move the counter), or
        // the last pruned when none is left.
        let head = sqlx::query(
            "SELECT position, pruned_through, (SELECT MAX(position) FROM outbox) AS last \
             FROM outbox_head WHERE id = 1",
        )
        .fetch_one(&mut *tx)
        .await?;
        let pruned_through: i64 = head.try_get("pruned_through")?;
        let head_position = head
            .try_get::<i64, _>("position")?
            .max(head.try_get::<Option<i64>, _>("last")?.unwrap_or(0))
            .max(pruned_through);
        let after = after.map_or(pruned_through, |cursor| cursor.0);
        if after < pruned_through {
            return Ok(Batch::Expired {
                oldest: Cursor(pruned_through),
            });
        }
        if after > head_position {
            return Ok(Batch::Unknown);
        }
        let rows = sqlx::query(
            "SELECT position, sequence, event FROM outbox WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        decode_events(&rows).map(Batch::Events)
    }

    /// How many events the NATS relay has not yet published (all of them
    /// when no relay ever ran).
    pub async fn unpublished(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox \
             WHERE position > (SELECT published_through FROM outbox_relay WHERE id = 1)",
        )
        .fetch_one(self.db.pool())
        .await
    }

    /// Deletes the events committed before `before` (µs since the epoch) and
    /// moves the retention horizon past them; with `keep_unpublished` (a
    /// NATS relay runs), never past an event not yet published. Returns how
    /// many were deleted.
    ///
    /// It walks the outbox from its oldest event in position order, up to
    /// the first one not older than `before`, [`PRUNE_CHUNK`] events per
    /// transaction: no index on `created_at` is needed (every commit with
    /// events writes one page fewer), and a large backlog never holds the
    /// writer (SQLite has one) for long.
    pub async fn prune(&self, before: i64, keep_unpublished: bool) -> Result<u64, sqlx::Error> {
        let mut deleted = 0;
        loop {
            let (chunk, more) = self.prune_chunk(before, keep_unpublished).await?;
            deleted += chunk;
            if !more {
                return Ok(deleted);
            }
        }
    }

    /// One transaction of [`Outbox::prune`]: the deleted count, and whether
    /// the chunk was all old enough (so there may be more).
    async fn prune_chunk(
        &self,
        before: i64,
        keep_unpublished: bool,
    ) -> Result<(u64, bool), sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let oldest =
            sqlx::query("SELECT position, created_at FROM outbox ORDER BY position LIMIT $1")
                .bind(PRUNE_CHUNK)
                .fetch_all(&mut *tx)
                .await?;
        let mut old_enough: usize = 0;
        for row in &oldest {
            if row.try_get::<i64, _>("created_at")? >= before {
                break;
            }
            old_enough += 1;
        }
        let Some(last) = old_enough.checked_sub(1).map(|i| &oldest[i]) else {
            return Ok((0, false));
        };
        let mut last: i64 = last.try_get("position")?;
        // The whole chunk was old enough: the next may be too.
        let mut more = old_enough == PRUNE_CHUNK as usize;
        if keep_unpublished {
            let published_through: i64 =
                sqlx::query_scalar("SELECT published_through FROM outbox_relay WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
            if published_through < last {
                last = published_through;
                more = false;
            }
        }
        let deleted = sqlx::query("DELETE FROM outbox WHERE position <= $1")
            .bind(last)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE outbox_head SET pruned_through = $1 WHERE id = 1 AND pruned_through < $1",
        )
        .bind(last)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((deleted, more))
    }

    /// Prunes events older than `retention` now and every minute until
    /// `stop` (a [`crate::ServiceHost`] background task).
    pub async fn prune_every_minute(
        self,
        retention: Duration,
        keep_unpublished: bool,
        stop: CancellationToken,
    ) {
        loop {
            let before = now_micros().saturating_sub(retention.as_micros() as i64);
            match self.prune(before, keep_unpublished).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "pruned events older than the retention"),
                Err(error) => tracing::warn!(%error, "pruning the outbox failed; will retry"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(PRUNE_INTERVAL) => {}
            }
        }
    }
}

/// Rows of `position, sequence, event` as stored events.
fn decode_events(rows: &[sqlx::any::AnyRow]) -> Result<Vec<StoredEvent>, sqlx::Error> {
    rows.iter()
        .map(|row| {
            let position: i64 = row.try_get("position")?;
            let sequence: i64 = row.try_get("sequence")?;
            let bytes: Vec<u8> = row.try_get("event")?;
            let mut event = pb::Event::decode(bytes.as_slice())
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            event.sequence = sequence;
            Ok(StoredEvent { position, event })
        })
        .collect()
}

/// The W3C trace context current on this task, as `traceparent` and
/// `tracestate` (empty when there is none).
fn current_trace_context() -> (String, String) {
    let mut headers = http::HeaderMap::new();
    crate::trace::inject(&opentelemetry::Context::current(), &mut headers);
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    (get("traceparent"), get("tracestate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbered parameters in `sql`, in order.
    fn parameters(sql: &str) -> Vec<usize> {
        sql.split('$')
            .skip(1)
            .map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn appended_events_number_their_parameters_after_the_statement_before_them() {
        let one = parameters(APPEND_SQLITE);
        assert_eq!(one.iter().max(), Some(&APPEND_PARAMETERS));
        // After a statement of 8 parameters, two events take 9–13 and 14–18,
        // each in the same places as the one-event SQL.
        let two = parameters(&sqlite_append_sql(8, 2));
        let expected: Vec<usize> = (0..2)
            .flat_map(|n| one.iter().map(move |p| p + 8 + n * APPEND_PARAMETERS))
            .collect();
        assert_eq!(two, expected);
        assert_eq!(sqlite_append_sql(0, 1), APPEND_SQLITE);
    }
}
