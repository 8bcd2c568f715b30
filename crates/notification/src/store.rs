//! The notification tables: feed leases and cursors, the inbox,
//! notifications and dead letters. Each processed event is one transaction: its inbox row, its
//! notification (or dead letter) and the feed's cursor move together, so a
//! crash leaves either all of them or none, and a restart resumes exactly
//! after the last event recorded.

use agora_interceptors::api::time::now_micros;
use agora_interceptors::db::{self, Database};
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

    /// Whether the event was processed already.
    pub async fn seen(&self, event_id: &str) -> Result<bool, NotificationError> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT event_id FROM inbox WHERE event_id = $1")
                .bind(event_id.to_owned())
                .fetch_optional(self.db.pool())
                .await?;
        Ok(found.is_some())
    }

    /// Moves `source`'s cursor past an event that needs no processing (or
    /// was processed already).
    pub async fn skip(&self, source: &str, cursor: &str) -> Result<(), NotificationError> {
        if cursor.is_empty() {
            // A JetStream delivery: the durable consumer keeps the position.
            return Ok(());
        }
        let mut tx = self.db.begin_write().await?;
        set_cursor(&mut tx, source, cursor).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records `delivery` as processed with `notification` sent, and moves
    /// its feed's cursor past it, in one transaction. False when its inbox
    /// row exists already (a redelivery: nothing is written but the cursor).
    pub async fn record_sent(
        &self,
        delivery: &Delivery,
        notification: &Notification,
    ) -> Result<bool, NotificationError> {
        let now = now_micros();
        let mut tx = self.db.begin_write().await?;
        let fresh = claim_inbox(&mut tx, delivery, "notified", now).await?;
        if fresh {
            insert_notification(&mut tx, notification, now).await?;
        }
        if !delivery.cursor.is_empty() {
            set_cursor(&mut tx, &delivery.source, &delivery.cursor).await?;
        }
        tx.commit().await?;
        Ok(fresh)
    }

    /// Gives up on `delivery` after `attempts` tries: dead letter, inbox row
    /// and cursor in one transaction.
    pub async fn record_dead(
        &self,
        delivery: &Delivery,
        attempts: u32,
        error: &str,
    ) -> Result<(), NotificationError> {
        let now = now_micros();
        let mut tx = self.db.begin_write().await?;
        if claim_inbox(&mut tx, delivery, "dead", now).await? {
            sqlx::query(
                "INSERT INTO dead_letters (event_id, source, event_type, event, attempts, \
                 last_error, dead_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(delivery.event_id.clone())
            .bind(delivery.source.clone())
            .bind(delivery.event_type.clone())
            .bind(delivery.encoded.clone())
            .bind(i64::from(attempts))
            .bind(error.chars().take(1000).collect::<String>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if !delivery.cursor.is_empty() {
            set_cursor(&mut tx, &delivery.source, &delivery.cursor).await?;
        }
        tx.commit().await?;
        Ok(())
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
        insert_notification(&mut tx, notification, now).await?;
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

/// Inserts the inbox row; false when the event has one already.
async fn claim_inbox(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    delivery: &Delivery,
    outcome: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (event_id, source, event_type, outcome, processed_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(delivery.event_id.clone())
    .bind(delivery.source.clone())
    .bind(delivery.event_type.clone())
    .bind(outcome.to_owned())
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

async fn insert_notification(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    notification: &Notification,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO notifications (event_id, user_id, kind, order_id, message, sent_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(notification.event_id.clone())
    .bind(notification.user_id.clone())
    .bind(notification.kind.as_str())
    .bind(notification.order_id.clone())
    .bind(notification.message.clone())
    .bind(now)
    .execute(&mut **tx)
    .await?;
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
