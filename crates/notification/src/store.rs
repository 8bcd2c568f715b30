//! The notification tables: feed leases and cursors, the inbox,
//! notifications and dead letters. Each batch of processed events is one
//! transaction: their inbox rows, their notifications (or dead letters) and
//! the feed's cursor move together, so a crash leaves either all of them or
//! none, and a restart resumes exactly after the last batch recorded.

use agora_interceptors::api::time::now_micros;
use agora_interceptors::db::{self, Database};
use std::collections::HashSet;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::domain::{DeadLetter, Delivery, Kind, Notification, Sent};
use crate::error::NotificationError;

/// Reads and writes the notification tables.
#[derive(Clone, Debug)]
pub struct NotificationStore {
    db: Database,
}

impl NotificationStore {
    /// A store over `db`, whose migrations have been applied.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database, for readiness.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The cursor after the last event processed from `source`; empty when
    /// none was.
    pub async fn cursor(&self, source: &str) -> Result<String, NotificationError> {
        let cursor: Option<String> =
            sqlx::query_scalar("SELECT cursor FROM feed_cursors WHERE source = $1")
                .bind(source.to_owned())
                .fetch_optional(self.db.pool())
                .await?;
        Ok(cursor.unwrap_or_default())
    }

    /// Takes or renews the lease on consuming `source` for `holder` until
    /// `ttl` from now: true when `holder` has it (the row was free, expired
    /// or its own), false while another replica's lease runs. One
    /// statement, so two replicas racing for it cannot both win.
    pub async fn claim_feed(
        &self,
        source: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, NotificationError> {
        let now = now_micros();
        let expires = now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        let claimed = sqlx::query(
            "INSERT INTO feed_leases (source, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (source) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE feed_leases.holder = excluded.holder OR feed_leases.expires_at < $4",
        )
        .bind(source.to_owned())
        .bind(holder.to_owned())
        .bind(expires)
        .bind(now)
        .execute(self.db.writer())
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    /// Gives up `holder`'s lease on `source`, so another replica takes over
    /// at once.
    pub async fn release_feed(&self, source: &str, holder: &str) -> Result<(), NotificationError> {
        sqlx::query("DELETE FROM feed_leases WHERE source = $1 AND holder = $2")
            .bind(source.to_owned())
            .bind(holder.to_owned())
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    /// Which of `event_ids` were processed already: one query for a batch.
    pub async fn seen(&self, event_ids: &[&str]) -> Result<HashSet<String>, NotificationError> {
        if event_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let sql = format!(
            "SELECT event_id FROM inbox WHERE event_id IN ({})",
            db::placeholders(1, event_ids.len())
        );
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
        for id in event_ids {
            query = query.bind((*id).to_owned());
        }
        Ok(query.fetch_all(self.db.pool()).await?.into_iter().collect())
    }

    /// Records a batch of processed deliveries of one feed and moves its
    /// cursor to `cursor` (the one after the batch's last event; empty for
    /// JetStream, whose durable consumer keeps the position), in one
    /// transaction: each event's inbox row, and its notification or dead
    /// letter when that row is new. Returns, per event, whether it was new:
    /// false for a redelivery recorded before (by another replica, or
    /// earlier in the batch), for which only the cursor moves.
    ///
    /// A batch costs a fixed number of statements whatever its size, which
    /// is what keeps the consumer cheap under load: on SQLite every
    /// statement is a hand-off to the database's thread.
    pub async fn record(
        &self,
        source: &str,
        cursor: &str,
        batch: &[(&Delivery, Processed<'_>)],
    ) -> Result<Vec<bool>, NotificationError> {
        if batch.is_empty() && cursor.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_micros();
        let mut tx = self.db.begin_write().await?;
        let mut fresh = claim_inbox(&mut tx, batch, now).await?;
        // A second delivery of one event in the batch is not new.
        let is_new: Vec<bool> = batch
            .iter()
            .map(|(delivery, _)| fresh.remove(&delivery.event_id))
            .collect();
        let new = || batch.iter().zip(&is_new).filter(|(_, new)| **new);
        let sent: Vec<&Notification> = new()
            .filter_map(|((_, processed), _)| match processed {
                Processed::Sent(notification) => Some(*notification),
                Processed::Dead { .. } => None,
            })
            .collect();
        insert_notifications(&mut tx, &sent, now).await?;
        let dead: Vec<(&Delivery, u32, &str)> = new()
            .filter_map(|((delivery, processed), _)| match processed {
                Processed::Dead { attempts, error } => Some((*delivery, *attempts, *error)),
                Processed::Sent(_) => None,
            })
            .collect();
        insert_dead_letters(&mut tx, &dead, now).await?;
        if !cursor.is_empty() {
            set_cursor(&mut tx, source, cursor).await?;
        }
        tx.commit().await?;
        Ok(is_new)
    }

    /// Records a replayed dead letter as sent: the dead letter goes, the
    /// notification is stored, the inbox says notified. False when it was
    /// no longer a dead letter (replayed concurrently).
    pub async fn record_replayed(
        &self,
        notification: &Notification,
    ) -> Result<bool, NotificationError> {
        let now = now_micros();
        let mut tx = self.db.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM dead_letters WHERE event_id = $1")
            .bind(notification.event_id.clone())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE inbox SET outcome = 'notified', processed_at = $2 WHERE event_id = $1")
            .bind(notification.event_id.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        insert_notifications(&mut tx, &[notification], now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Notifications with event ids before `before` (newest first), of
    /// `user_id` when given.
    pub async fn notifications(
        &self,
        user_id: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Sent>, NotificationError> {
        // '~' sorts after every UUID: "no bound" for the first page.
        let before = before.unwrap_or("~").to_owned();
        let rows =
            match user_id {
                Some(user) => sqlx::query(
                    "SELECT event_id, user_id, kind, order_id, message, sent_at FROM notifications \
                     WHERE event_id < $1 AND user_id = $3 ORDER BY event_id DESC LIMIT $2",
                )
                .bind(before)
                .bind(i64::from(limit))
                .bind(user.to_owned())
                .fetch_all(self.db.pool())
                .await?,
                None => sqlx::query(
                    "SELECT event_id, user_id, kind, order_id, message, sent_at FROM notifications \
                     WHERE event_id < $1 ORDER BY event_id DESC LIMIT $2",
                )
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(self.db.pool())
                .await?,
            };
        rows.iter().map(sent_from_row).collect()
    }

    /// Dead letters with event ids after `after`, oldest first.
    pub async fn dead_letters(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, NotificationError> {
        let rows = sqlx::query(
            "SELECT event_id, source, event_type, event, attempts, last_error, dead_at \
             FROM dead_letters WHERE event_id > $1 ORDER BY event_id LIMIT $2",
        )
        .bind(after.unwrap_or_default().to_owned())
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(dead_from_row).collect()
    }

    /// One dead letter.
    pub async fn dead_letter(
        &self,
        event_id: &str,
    ) -> Result<Option<DeadLetter>, NotificationError> {
        let row = sqlx::query(
            "SELECT event_id, source, event_type, event, attempts, last_error, dead_at \
             FROM dead_letters WHERE event_id = $1",
        )
        .bind(event_id.to_owned())
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(dead_from_row).transpose()
    }
}

/// What became of one processed event, to record.
#[derive(Clone, Copy, Debug)]
pub enum Processed<'a> {
    /// This notification was sent for it.
    Sent(&'a Notification),
    /// Given up on after `attempts` tries, the last failing with `error`.
    Dead {
        /// Tries made.
        attempts: u32,
        /// The last error.
        error: &'a str,
    },
}

/// Inserts the batch's inbox rows in one statement; returns the event ids
/// whose row is new (an event with a row already keeps it).
async fn claim_inbox(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    batch: &[(&Delivery, Processed<'_>)],
    now: i64,
) -> Result<HashSet<String>, sqlx::Error> {
    if batch.is_empty() {
        return Ok(HashSet::new());
    }
    let sql = format!(
        "INSERT INTO inbox (event_id, source, event_type, outcome, processed_at) VALUES {} \
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        db::value_rows(5, batch.len())
    );
    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
    for (delivery, processed) in batch {
        let outcome = match processed {
            Processed::Sent(_) => "notified",
            Processed::Dead { .. } => "dead",
        };
        query = query
            .bind(delivery.event_id.clone())
            .bind(delivery.source.clone())
            .bind(delivery.event_type.clone())
            .bind(outcome)
            .bind(now);
    }
    Ok(query.fetch_all(&mut **tx).await?.into_iter().collect())
}

async fn insert_notifications(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    notifications: &[&Notification],
    now: i64,
) -> Result<(), sqlx::Error> {
    if notifications.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO notifications (event_id, user_id, kind, order_id, message, sent_at) VALUES {}",
        db::value_rows(6, notifications.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for notification in notifications {
        query = query
            .bind(notification.event_id.clone())
            .bind(notification.user_id.clone())
            .bind(notification.kind.as_str())
            .bind(notification.order_id.clone())
            .bind(notification.message.clone())
            .bind(now);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

async fn insert_dead_letters(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dead: &[(&Delivery, u32, &str)],
    now: i64,
) -> Result<(), sqlx::Error> {
    if dead.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO dead_letters (event_id, source, event_type, event, attempts, last_error, \
         dead_at) VALUES {}",
        db::value_rows(7, dead.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (delivery, attempts, error) in dead {
        query = query
            .bind(delivery.event_id.clone())
            .bind(delivery.source.clone())
            .bind(delivery.event_type.clone())
            .bind(delivery.encoded.clone())
            .bind(i64::from(*attempts))
            .bind(error.chars().take(1000).collect::<String>())
            .bind(now);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

async fn set_cursor(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    source: &str,
    cursor: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO feed_cursors (source, cursor, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
    )
    .bind(source.to_owned())
    .bind(cursor.to_owned())
    .bind(now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn sent_from_row(row: &AnyRow) -> Result<Sent, NotificationError> {
    let kind: String = row.try_get("kind")?;
    Ok(Sent {
        notification: Notification {
            event_id: row.try_get("event_id")?,
            user_id: row.try_get("user_id")?,
            kind: Kind::parse(&kind).ok_or_else(|| db::corrupt("notification kind", &kind))?,
            order_id: row.try_get("order_id")?,
            message: row.try_get("message")?,
        },
        sent_at: row.try_get("sent_at")?,
    })
}

fn dead_from_row(row: &AnyRow) -> Result<DeadLetter, NotificationError> {
    Ok(DeadLetter {
        event_id: row.try_get("event_id")?,
        source: row.try_get("source")?,
        event_type: row.try_get("event_type")?,
        encoded: row.try_get("event")?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        dead_at: row.try_get("dead_at")?,
    })
}
