//! The `reservations` and `reservation_lines` tables, and the stock they
//! move. Every operation is one transaction that locks the reservation row
//! first and product rows after it in sku order (see the parent module).
//!
//! **Expiry.** A HELD reservation past `expire_time` can no longer be
//! committed (CommitReservation expires it on the spot and answers
//! FAILED_PRECONDITION `RESERVATION_EXPIRED`); its units return at the next
//! sweep at the latest. Release after commit restocks (the saga's
//! cancel-after-confirm); release of RELEASED or EXPIRED moves nothing.
//! Conservation: per sku, the sum of adjustments equals `on_hand` plus the
//! units of COMMITTED reservations, and `reserved` equals the units of HELD
//! ones (the race tests check both).

use agora_interceptors::api::time::now_micros;
use agora_interceptors::db::{self, Database};
use agora_interceptors::outbox::Outbox;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{
    begin_write, load_lines, load_reservation, reservation_columns, reservation_from_row, retrying,
};
use crate::domain::{
    Currency, OrderId, RequestedLines, Reservation, ReservationState, ReservedLine, Ttl,
};
use crate::error::{InventoryError, Shortage};
use crate::events;

/// How many expired reservations one sweep pass reads at a time.
const SWEEP_BATCH: i64 = 100;

/// Reserves, commits, releases and expires stock for orders.
#[derive(Clone, Debug)]
pub struct Reservations {
    db: Database,
    outbox: Outbox,
}

impl Reservations {
    /// Reservations over `db`, whose migrations have been applied; their
    /// events go to `outbox`.
    pub fn new(db: Database, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    /// Holds `lines` for `order_id`, all or nothing, at the catalogue's
    /// current prices. A repeat with the same lines returns the existing
    /// reservation as it now is; with other lines, RESERVATION_MISMATCH.
    pub async fn reserve(
        &self,
        order_id: OrderId,
        lines: &RequestedLines,
        ttl: Ttl,
    ) -> Result<Reservation, InventoryError> {
        retrying("ReserveStock", || self.try_reserve(order_id, lines, ttl)).await
    }

    async fn try_reserve(
        &self,
        order_id: OrderId,
        lines: &RequestedLines,
        ttl: Ttl,
    ) -> Result<Reservation, InventoryError> {
        let now = now_micros();
        let expires_at = now.saturating_add(ttl.as_micros());
        let mut tx = begin_write(&self.db).await?;

        // Claim the order id. A concurrent ReserveStock for the same order
        // waits here (PostgreSQL: on the key; SQLite: on the write lock) and
        // then sees this one's outcome.
        let claimed = sqlx::query(
            "INSERT INTO reservations \
               (order_id, state, currency_code, total_minor, expires_at, created_at, updated_at) \
             VALUES ($1, 'HELD', '', 0, $2, $3, $3) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id.to_string())
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            let existing = load_reservation(&mut tx, order_id).await?;
            tx.rollback().await?;
            let existing = existing.ok_or_else(|| {
                anyhow::anyhow!("reservation {order_id} conflicted but cannot be read")
            })?;
            return if lines.matches(&existing.lines) {
                Ok(existing)
            } else {
                Err(InventoryError::ReservationMismatch(order_id))
            };
        }

        // Take each line's units with one conditional update, in sku order.
        // Every line is tried, so a refusal names every short sku at once.
        let mut reserved = Vec::new();
        let mut currencies = Vec::new();
        let mut unknown = Vec::new();
        let mut short = Vec::new();
        let mut low = Vec::new();
        for (sku, quantity) in lines.iter() {
            let taken = sqlx::query(
                "UPDATE products SET reserved = reserved + $1, updated_at = $2 \
                 WHERE sku = $3 AND on_hand - reserved >= $1 \
                 RETURNING price_minor, currency_code, on_hand - reserved AS available, \
                   low_stock_threshold",
            )
            .bind(quantity.get())
            .bind(now)
            .bind(sku.as_str().to_owned())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = taken {
                low.extend(events::low(
                    sku,
                    row.try_get("available")?,
                    quantity.get(),
                    row.try_get("low_stock_threshold")?,
                ));
                let currency: String = row.try_get("currency_code")?;
                currencies.push(currency);
                reserved.push(ReservedLine {
                    sku: sku.clone(),
                    quantity,
                    unit_price_minor: row.try_get("price_minor")?,
                });
                continue;
            }
            let stock = sqlx::query("SELECT on_hand, reserved FROM products WHERE sku = $1")
                .bind(sku.as_str().to_owned())
                .fetch_optional(&mut *tx)
                .await?;
            match stock {
                None => unknown.push(sku.clone()),
                Some(row) => short.push(Shortage {
                    sku: sku.clone(),
                    requested: quantity.get(),
                    available: row.try_get::<i64, _>("on_hand")?
                        - row.try_get::<i64, _>("reserved")?,
                }),
            }
        }
        if !unknown.is_empty() {
            tx.rollback().await?;
            return Err(InventoryError::ProductNotFound(unknown));
        }
        if !short.is_empty() {
            tx.rollback().await?;
            return Err(InventoryError::InsufficientStock(short));
        }
        currencies.sort_unstable();
        currencies.dedup();
        let [currency] = currencies.as_slice() else {
            tx.rollback().await?;
            return Err(InventoryError::CurrencyMismatch);
        };
        let currency = Currency::parse(currency).map_err(|_| db::corrupt("currency", currency))?;

        // Prices are at most 10^12 and a reservation at most 100 × 10 000
        // units, so the total cannot overflow (see `Price::MAX_MINOR`).
        let total_minor = reserved
            .iter()
            .map(|line| line.quantity.get() * line.unit_price_minor)
            .sum();
        for line in &reserved {
            sqlx::query(
                "INSERT INTO reservation_lines (order_id, sku, quantity, unit_price_minor) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(order_id.to_string())
            .bind(line.sku.as_str().to_owned())
            .bind(line.quantity.get())
            .bind(line.unit_price_minor)
            .execute(&mut *tx)
            .await?;
        }
        // The reservation's totals and its events: one round trip.
        let mut changes = vec![events::reserved(order_id, &reserved)];
        changes.append(&mut low);
        let appended = self
            .outbox
            .execute_and_append(
                &mut tx,
                "UPDATE reservations SET currency_code = $1, total_minor = $2 WHERE order_id = $3",
                3,
                |update| {
                    update
                        .bind(currency.code())
                        .bind(total_minor)
                        .bind(order_id.to_string())
                },
                &changes,
            )
            .await?
            .appended;
        tx.commit().await?;
        self.outbox.committed(appended);
        Ok(Reservation {
            order_id,
            state: ReservationState::Held,
            lines: reserved,
            currency,
            total_minor,
            expires_at,
            created_at: now,
            updated_at: now,
        })
    }

    /// Turns a HELD reservation into a sale. Idempotent for COMMITTED ones;
    /// RELEASED, EXPIRED and past-expiry HELD ones cannot be committed.
    pub async fn commit(&self, order_id: OrderId) -> Result<Reservation, InventoryError> {
        retrying("CommitReservation", || self.try_commit(order_id)).await
    }

    async fn try_commit(&self, order_id: OrderId) -> Result<Reservation, InventoryError> {
        let now = now_micros();
        let mut tx = begin_write(&self.db).await?;
        let committed = sqlx::query(concat!(
            "UPDATE reservations SET state = 'COMMITTED', updated_at = $1 \
             WHERE order_id = $2 AND state = 'HELD' AND expires_at > $1 RETURNING ",
            reservation_columns!()
        ))
        .bind(now)
        .bind(order_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = committed {
            // The sold units leave both counts; `reserved` covered them, so
            // the invariant holds line by line.
            return self
                .move_and_commit(tx, order_id, &row, now, Movement::Sell)
                .await;
        }

        let Some(reservation) = load_reservation(&mut tx, order_id).await? else {
            tx.rollback().await?;
            return Err(InventoryError::ReservationNotFound(order_id));
        };
        match reservation.state {
            ReservationState::Committed => {
                tx.rollback().await?;
                Ok(reservation)
            }
            ReservationState::Released | ReservationState::Expired => {
                tx.rollback().await?;
                Err(InventoryError::NotCommittable {
                    order_id,
                    state: reservation.state,
                })
            }
            ReservationState::Held => {
                // Past its expiry but not swept yet: expire it now, so the
                // answer and the stock agree with what the sweeper would do.
                let expired = expire_in(&self.outbox, &mut tx, order_id, now).await?;
                tx.commit().await?;
                if let Some(appended) = expired {
                    self.outbox.committed(appended);
                    tracing::info!(%order_id, "reservation expired at commit");
                }
                Err(InventoryError::NotCommittable {
                    order_id,
                    state: ReservationState::Expired,
                })
            }
        }
    }

    /// Gives a reservation's stock back once: HELD units to available,
    /// COMMITTED units back on hand. RELEASED and EXPIRED ones are returned
    /// as they are.
    pub async fn release(&self, order_id: OrderId) -> Result<Reservation, InventoryError> {
        retrying("ReleaseReservation", || self.try_release(order_id)).await
    }

    async fn try_release(&self, order_id: OrderId) -> Result<Reservation, InventoryError> {
        let now = now_micros();
        let mut tx = begin_write(&self.db).await?;
        // Two conditional transitions, each from one state, tell which stock
        // to move without reading the state first.
        for (from, movement) in [
            (ReservationState::Held, Movement::Unhold),
            (ReservationState::Committed, Movement::Restock),
        ] {
            let released = sqlx::query(concat!(
                "UPDATE reservations SET state = 'RELEASED', updated_at = $1 \
                 WHERE order_id = $2 AND state = $3 RETURNING ",
                reservation_columns!()
            ))
            .bind(now)
            .bind(order_id.to_string())
            .bind(from.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = released {
                return self
                    .move_and_commit(tx, order_id, &row, now, movement)
                    .await;
            }
        }
        // Released or expired before, or unknown: nothing moves.
        let reservation = load_reservation(&mut tx, order_id).await?;
        tx.rollback().await?;
        reservation.ok_or(InventoryError::ReservationNotFound(order_id))
    }

    /// Ends a state change of `order_id` whose `UPDATE … RETURNING` gave
    /// `row`: moves its stock, appends the event saying so and commits.
    async fn move_and_commit(
        &self,
        mut tx: Transaction<'static, Any>,
        order_id: OrderId,
        row: &AnyRow,
        now: i64,
        movement: Movement,
    ) -> Result<Reservation, InventoryError> {
        let reservation = reservation_from_row(&mut tx, order_id, row).await?;
        let appended = move_stock(
            &self.outbox,
            &mut tx,
            order_id,
            &reservation.lines,
            now,
            movement,
        )
        .await?;
        tx.commit().await?;
        self.outbox.committed(appended);
        Ok(reservation)
    }

    /// The reservation of `order_id`, if any.
    pub async fn get(&self, order_id: OrderId) -> Result<Option<Reservation>, InventoryError> {
        let mut conn = self.db.pool().acquire().await?;
        load_reservation(&mut conn, order_id).await
    }

    /// Expires every HELD reservation whose expiry has passed and gives its
    /// units back; returns how many it expired. Safe to run from several
    /// processes at once: each reservation expires exactly once.
    pub async fn expire_due(&self) -> Result<u64, InventoryError> {
        let mut expired = 0;
        loop {
            let now = now_micros();
            let due = sqlx::query(
                "SELECT order_id FROM reservations \
                 WHERE state = 'HELD' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
            )
            .bind(now)
            .bind(SWEEP_BATCH)
            .fetch_all(self.db.pool())
            .await?;
            for row in &due {
                let id: String = row.try_get("order_id")?;
                let order_id = OrderId::parse(&id).map_err(|_| db::corrupt("order id", &id))?;
                // The list above is only a hint; the transition re-checks.
                let done = retrying("expiring a reservation", move || async move {
                    let mut tx = begin_write(&self.db).await?;
                    let expired = expire_in(&self.outbox, &mut tx, order_id, now).await?;
                    tx.commit().await?;
                    if let Some(appended) = expired {
                        self.outbox.committed(appended);
                    }
                    Ok(expired.is_some())
                })
                .await?;
                if done {
                    tracing::info!(%order_id, "reservation expired; stock released");
                    expired += 1;
                }
            }
            if (due.len() as i64) < SWEEP_BATCH {
                return Ok(expired);
            }
        }
    }
}

/// Moves a HELD reservation past `now` to EXPIRED and unholds its units, in
/// `tx`, with its StockReleased event, returning how many events it
/// appended. `None` when it was not HELD or not yet due (someone else
/// acted).
async fn expire_in(
    outbox: &Outbox,
    tx: &mut Transaction<'static, Any>,
    order_id: OrderId,
    now: i64,
) -> Result<Option<usize>, InventoryError> {
    let expired = sqlx::query(
        "UPDATE reservations SET state = 'EXPIRED', updated_at = $1 \
         WHERE order_id = $2 AND state = 'HELD' AND expires_at <= $1",
    )
    .bind(now)
    .bind(order_id.to_string())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if expired == 1 {
        let lines = load_lines(tx, order_id).await?;
        let appended = move_stock(outbox, tx, order_id, &lines, now, Movement::Unhold).await?;
        return Ok(Some(appended));
    }
    Ok(None)
}

/// What a reservation's state change does to its products' counts.
#[derive(Clone, Copy, Debug)]
enum Movement {
    /// HELD → COMMITTED: the units are sold (`on_hand` and `reserved` drop).
    Sell,
    /// HELD → RELEASED or EXPIRED: the units become available again.
    Unhold,
    /// COMMITTED → RELEASED: the sold units come back on hand.
    Restock,
}

/// Applies `movement` to the products of `lines` (in sku order, one update
/// each) and appends the event saying so (StockCommitted or
/// StockReleased), the last update and the event in one round trip (see
/// [`Outbox::execute_and_append`]). Returns how many events it appended.
async fn move_stock(
    outbox: &Outbox,
    tx: &mut Transaction<'static, Any>,
    order_id: OrderId,
    lines: &[ReservedLine],
    now: i64,
    movement: Movement,
) -> Result<usize, InventoryError> {
    let statement = match movement {
        Movement::Sell => {
            "UPDATE products SET on_hand = on_hand - $1, reserved = reserved - $1, \
             updated_at = $2 WHERE sku = $3"
        }
        Movement::Unhold => {
            "UPDATE products SET reserved = reserved - $1, updated_at = $2 WHERE sku = $3"
        }
        Movement::Restock => {
            "UPDATE products SET on_hand = on_hand + $1, updated_at = $2 WHERE sku = $3"
        }
    };
    let event = match movement {
        Movement::Sell => events::committed(order_id, lines),
        Movement::Unhold => events::released(order_id, lines, false),
        Movement::Restock => events::released(order_id, lines, true),
    };
    let missing = |line: &ReservedLine| -> InventoryError {
        anyhow::anyhow!("product {} of reservation {order_id} is missing", line.sku).into()
    };
    // A reservation has at least one line; without, only the event.
    let Some((last, before)) = lines.split_last() else {
        return Ok(outbox.append(tx, &[event]).await?);
    };
    for line in before {
        let moved = sqlx::query(statement)
            .bind(line.quantity.get())
            .bind(now)
            .bind(line.sku.as_str().to_owned())
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if moved != 1 {
            return Err(missing(line));
        }
    }
    let done = outbox
        .execute_and_append(
            tx,
            statement,
            3,
            |update| {
                update
                    .bind(last.quantity.get())
                    .bind(now)
                    .bind(last.sku.as_str().to_owned())
            },
            &[event],
        )
        .await?;
    if done.rows_affected != 1 {
        return Err(missing(last));
    }
    Ok(done.appended)
}
