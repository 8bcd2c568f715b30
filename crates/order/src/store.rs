//! The order tables: `orders`, `order_lines` and the saga log `saga_steps`.
//!
//! Every change to an order is one transaction: the `orders` row (state, phase,
//! amounts, lease, version), the lines' prices and the new step-log rows move
//! together, so a crash leaves either the old or the new state, never half.
//!
//! **The semantic lock.** Saga writes are fenced: they only apply while the
//! writer holds the order's lease (`lease_owner = $me`, taken with a
//! conditional UPDATE when free or expired). The runner of PlaceOrder, the
//! recovery loop of any process and CancelOrder therefore never write the same
//! order at once; a runner that lost its lease (it stalled past `lease_until`)
//! finds its next write refused and stops.
//!
//! The domain events of a change (OrderPlaced, OrderConfirmed, OrderFailed,
//! OrderCancelled; see [`crate::events`]) are appended to the outbox in the
//! change's own transaction, as its last writes.
//!
//! Every committed change is announced on an in-process broadcast
//! ([`OrderStore::changes_of`]), which WatchOrder streams.

use std::time::Duration;

use agora_interceptors::api::time::now_micros;
use agora_interceptors::db::{self, Database};
use agora_interceptors::outbox::Outbox;
use sqlx::Row;
use sqlx::any::AnyRow;
use tokio::sync::broadcast;

use crate::domain::{
    Cart, CustomerId, Money, OrderId, OrderState, PaymentToken, Quantity, RequestId, Sku,
};
use crate::error::OrderError;
use crate::events;
use crate::steps::{Effect, Phase, Prices, StepEntry, StepKind, StepLog, StepStatus};

/// Columns of `orders` every read takes, as a literal so queries stay
/// `&'static str`.
macro_rules! order_columns {
    () => {
        "o.order_id, o.user_id, o.request_id, o.state, o.phase, o.currency, o.total_minor, \
         o.payment_id, o.payment_token, o.failure_reason, o.failure_message, o.cancel_reason, \
         o.version, o.created_at, o.updated_at"
    };
}

/// One line of a stored order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineRecord {
    /// The product.
    pub sku: Sku,
    /// Units ordered.
    pub quantity: Quantity,
    /// Price of one unit, once stock is reserved.
    pub unit_price: Option<Money>,
}

/// An order as stored, with its lines and saga log.
#[derive(Clone, Debug)]
pub struct OrderRecord {
    /// The order's id.
    pub id: OrderId,
    /// Who placed it.
    pub customer: CustomerId,
    /// The PlaceOrder request_id that created it.
    pub request_id: RequestId,
    /// What callers see.
    pub state: OrderState,
    /// What the saga does next.
    pub phase: Phase,
    /// The lines, in the order placed.
    pub lines: Vec<LineRecord>,
    /// The total, once stock is reserved.
    pub total: Option<Money>,
    /// The payment, once a charge has been answered.
    pub payment_id: Option<String>,
    /// The payment-method token, while the charge may still run.
    pub payment_token: Option<PaymentToken>,
    /// Why compensation began (shown once the order is FAILED).
    pub failure_reason: String,
    /// Why compensation began, for people.
    pub failure_message: String,
    /// Why the order was cancelled.
    pub cancel_reason: String,
    /// The saga log, oldest first.
    pub steps: StepLog,
    /// Bumped by every change; WatchOrder sends each new version.
    pub version: i64,
    /// When it was placed (µs since the epoch).
    pub created_at: i64,
    /// When it last changed (µs since the epoch).
    pub updated_at: i64,
}

impl OrderRecord {
    /// The lines as (sku, quantity) pairs.
    pub fn cart_lines(&self) -> Vec<(Sku, Quantity)> {
        self.lines
            .iter()
            .map(|line| (line.sku.clone(), line.quantity))
            .collect()
    }
}

/// An order a customer asks for (PlaceOrder), to be recorded PENDING before
/// any remote call.
#[derive(Clone, Debug)]
pub struct NewOrder {
    /// Who places it.
    pub customer: CustomerId,
    /// The caller's idempotency key.
    pub request_id: RequestId,
    /// What is ordered.
    pub cart: Cart,
    /// How it is paid.
    pub payment_token: PaymentToken,
}

/// What recording a new order did.
#[derive(Debug)]
pub enum Inserted {
    /// The order was recorded.
    Created,
    /// The customer already has an order with this request_id.
    Duplicate,
}

/// One new row of the step log.
#[derive(Clone, Debug)]
pub struct NewStep {
    /// Which step.
    pub step: StepKind,
    /// How far this try got.
    pub status: StepStatus,
    /// Which try.
    pub attempt: i32,
    /// What it did downstream.
    pub effect: Effect,
    /// For people.
    pub detail: String,
}

/// One change to an order, applied atomically; `None` fields stay as they are.
#[derive(Clone, Debug, Default)]
pub struct Transition {
    /// Rows to append to the step log.
    pub steps: Vec<NewStep>,
    /// The next phase.
    pub phase: Option<Phase>,
    /// The new state.
    pub state: Option<OrderState>,
    /// Prices learnt from the reservation.
    pub prices: Option<Prices>,
    /// The payment answered by Charge.
    pub payment_id: Option<String>,
    /// Why compensation begins: (reason, message).
    pub failure: Option<(String, String)>,
    /// Erase the payment-method token (the charge is settled).
    pub forget_payment_token: bool,
    /// What happens to the writer's lease.
    pub lease: Lease,
}

/// What a [`Transition`] does to its writer's lease on the order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lease {
    /// Leave it as it is. The default, so that no transition can end a live
    /// runner's lease by omission: an expired lease makes the order look
    /// orphaned, and another process's recovery would take it over while
    /// this runner goes on to its next step.
    #[default]
    Keep,
    /// Hold it this long from now (the next call, or a backoff, must fit in
    /// it).
    HoldFor(Duration),
    /// Give it up: the runner stops.
    Release,
}

/// Reads and writes orders.
#[derive(Clone, Debug)]
pub struct OrderStore {
    db: Database,
    outbox: Outbox,
    changes: broadcast::Sender<OrderId>,
}

impl OrderStore {
    /// A store over `db`, whose migrations have been applied.
    pub fn new(db: Database) -> Self {
        let (changes, _) = broadcast::channel(1024);
        let outbox = Outbox::new(db.clone(), "order");
        Self {
            db,
            outbox,
            changes,
        }
    }

    /// The outbox the order events go to, for the event feed.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The database, for readiness.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Announcements of the changes this process commits to order `id`
    /// from now on. Take it before reading the order, so no change falls in
    /// between.
    pub fn changes_of(&self, id: OrderId) -> OrderChanges {
        OrderChanges {
            id,
            changes: self.changes.subscribe(),
        }
    }

    fn announce(&self, id: OrderId) {
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send(id);
    }

    /// A read-only transaction whose reads all see one snapshot, so an order,
    /// its lines and its steps are read as of one moment (a saga write
    /// committing between two of the reads would otherwise show, say, a step
    /// of a newer version than the order row). SQLite's WAL gives a read
    /// transaction one snapshot; PostgreSQL needs REPEATABLE READ for it.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, OrderError> {
        let mut tx = self.db.pool().begin().await?;
        if self.db.backend() == db::Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// Records a new PENDING order with its lines, in one transaction, leased
    /// from birth to `lease_owner` until `lease_until` (the runner that will
    /// drive its saga), so recovery elsewhere leaves it alone.
    pub async fn insert(
        &self,
        id: OrderId,
        order: &NewOrder,
        lease_owner: &str,
        lease_until: i64,
    ) -> Result<Inserted, OrderError> {
        let now = now_micros();
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO orders (order_id, user_id, request_id, state, phase, payment_token, \
             lease_owner, lease_until, created_at, updated_at) \
             VALUES ($1, $2, $3, 'PENDING', 'reserve', $4, $5, $6, $7, $7)",
        )
        .bind(id.to_string())
        .bind(order.customer.to_string())
        .bind(order.request_id.to_string())
        .bind(order.payment_token.expose().to_owned())
        .bind(lease_owner.to_owned())
        .bind(lease_until)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // The only unique key besides the fresh UUIDv7 is (user, request_id).
            Err(error) if db::unique_violation(&error).is_some() => {
                return Ok(Inserted::Duplicate);
            }
            Err(error) => return Err(error.into()),
        }
        // The lines and the OrderPlaced event: one round trip (a cart has at
        // least one line).
        let lines = order.cart.lines();
        let placed = events::placed(id, order.customer, lines);
        let appended = self
            .outbox
            .execute_and_append(
                &mut tx,
                &insert_lines_sql(lines.len()),
                LINE_COLUMNS * lines.len(),
                |mut insert| {
                    for (line_no, (sku, quantity)) in lines.iter().enumerate() {
                        insert = insert
                            .bind(id.to_string())
                            .bind(line_no as i64)
                            .bind(sku.as_str().to_owned())
                            .bind(quantity.get());
                    }
                    insert
                },
                &[placed],
            )
            .await?
            .appended;
        tx.commit().await?;
        self.outbox.committed(appended);
        self.announce(id);
        Ok(Inserted::Created)
    }

    /// The order with this id; NOT_FOUND when there is none.
    pub async fn order(&self, id: OrderId) -> Result<OrderRecord, OrderError> {
        self.get(id)
            .await?
            .ok_or_else(|| OrderError::NotFound(id.to_string()))
    }

    /// The order with this id, if any.
    pub async fn get(&self, id: OrderId) -> Result<Option<OrderRecord>, OrderError> {
        let mut tx = self.snapshot().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders o WHERE o.order_id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut order = order_from_row(&row)?;
        let lines = sqlx::query(
            "SELECT order_id, sku, quantity, unit_price_minor, currency FROM order_lines \
             WHERE order_id = $1 ORDER BY line_no",
        )
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        for line in &lines {
            order.lines.push(line_from_row(line)?);
        }
        let steps = sqlx::query(
            "SELECT order_id, step, status, attempt, effect, detail, created_at FROM saga_steps \
             WHERE order_id = $1 ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        for step in &steps {
            order.steps.0.push(step_from_row(step)?);
        }
        tx.commit().await?;
        Ok(Some(order))
    }

    /// The customer's order placed with this request_id, if any.
    pub async fn find_by_request(
        &self,
        customer: CustomerId,
        request_id: RequestId,
    ) -> Result<Option<OrderRecord>, OrderError> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT order_id FROM orders WHERE user_id = $1 AND request_id = $2",
        )
        .bind(customer.to_string())
        .bind(request_id.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        match id {
            Some(id) => self.get(parse_stored_id(&id)?).await,
            None => Ok(None),
        }
    }

    /// Up to `limit` orders after the id `after`, oldest first, of one
    /// customer or of everyone. Three queries per page, whatever its size;
    /// each filter has its own statement so each uses its index
    /// (`orders_user_idx` for one customer, the primary key for everyone).
    pub async fn list(
        &self,
        customer: Option<CustomerId>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OrderRecord>, OrderError> {
        let (orders_sql, lines_sql, steps_sql) = if customer.is_some() {
            (
                concat!(
                    "SELECT ",
                    order_columns!(),
                    " FROM orders o WHERE o.user_id = $1 AND o.order_id > $2 \
                      ORDER BY o.order_id LIMIT $3"
                ),
                "SELECT l.order_id, l.sku, l.quantity, l.unit_price_minor, l.currency \
                 FROM order_lines l JOIN orders o ON o.order_id = l.order_id \
                 WHERE o.user_id = $1 AND o.order_id > $2 AND o.order_id <= $3 \
                 ORDER BY l.order_id, l.line_no",
                "SELECT s.order_id, s.step, s.status, s.attempt, s.effect, s.detail, s.created_at \
                 FROM saga_steps s JOIN orders o ON o.order_id = s.order_id \
                 WHERE o.user_id = $1 AND o.order_id > $2 AND o.order_id <= $3 \
                 ORDER BY s.order_id, s.seq",
            )
        } else {
            // $1 is bound (empty) but unused, so both variants bind alike.
            (
                concat!(
                    "SELECT ",
                    order_columns!(),
                    " FROM orders o WHERE $1 = '' AND o.order_id > $2 \
                      ORDER BY o.order_id LIMIT $3"
                ),
                "SELECT l.order_id, l.sku, l.quantity, l.unit_price_minor, l.currency \
                 FROM order_lines l WHERE $1 = '' AND l.order_id > $2 AND l.order_id <= $3 \
                 ORDER BY l.order_id, l.line_no",
                "SELECT s.order_id, s.step, s.status, s.attempt, s.effect, s.detail, s.created_at \
                 FROM saga_steps s WHERE $1 = '' AND s.order_id > $2 AND s.order_id <= $3 \
                 ORDER BY s.order_id, s.seq",
            )
        };
        let customer = customer.map(|c| c.to_string()).unwrap_or_default();
        let after = after.unwrap_or_default().to_owned();
        let mut tx = self.snapshot().await?;
        let rows = sqlx::query(orders_sql)
            .bind(customer.clone())
            .bind(after.clone())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut orders = rows
            .iter()
            .map(order_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(last) = orders.last().map(|o| o.id.to_string()) else {
            tx.commit().await?;
            return Ok(orders);
        };
        // Lines and steps of exactly the orders on this page: same filter,
        // bounded by the page's last id.
        let lines = sqlx::query(lines_sql)
            .bind(customer.clone())
            .bind(after.clone())
            .bind(last.clone())
            .fetch_all(&mut *tx)
            .await?;
        let steps = sqlx::query(steps_sql)
            .bind(customer)
            .bind(after)
            .bind(last)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let positions: std::collections::HashMap<String, usize> = orders
            .iter()
            .enumerate()
            .map(|(at, order)| (order.id.to_string(), at))
            .collect();
        let index = |id: &str| positions.get(id).copied();
        let mut placed_lines = Vec::with_capacity(lines.len());
        for row in &lines {
            let id: String = row.try_get("order_id")?;
            placed_lines.push((index(&id), line_from_row(row)?));
        }
        let mut placed_steps = Vec::with_capacity(steps.len());
        for row in &steps {
            let id: String = row.try_get("order_id")?;
            placed_steps.push((index(&id), step_from_row(row)?));
        }
        for (at, line) in placed_lines {
            if let Some(at) = at {
                orders[at].lines.push(line);
            }
        }
        for (at, step) in placed_steps {
            if let Some(at) = at {
                orders[at].steps.0.push(step);
            }
        }
        Ok(orders)
    }

    /// Takes the order's lease for `owner` until `until` if it is free,
    /// expired or already `owner`'s, and the saga has work left. True when
    /// taken.
    pub async fn acquire_lease(
        &self,
        id: OrderId,
        owner: &str,
        until: i64,
    ) -> Result<bool, OrderError> {
        let result = sqlx::query(
            "UPDATE orders SET lease_owner = $2, lease_until = $3 \
             WHERE order_id = $1 AND phase <> 'done' \
               AND (lease_owner IS NULL OR lease_until < $4 OR lease_owner = $2)",
        )
        .bind(id.to_string())
        .bind(owner.to_owned())
        .bind(until)
        .bind(now_micros())
        .execute(self.db.writer())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Extends `owner`'s lease to at least `until`, if `owner` still holds
    /// it (a live runner's heartbeat); false when the lease was lost.
    pub async fn renew_lease(
        &self,
        id: OrderId,
        owner: &str,
        until: i64,
    ) -> Result<bool, OrderError> {
        let result = sqlx::query(
            "UPDATE orders SET lease_until = CASE WHEN lease_until < $3 THEN $3 ELSE lease_until END \
             WHERE order_id = $1 AND lease_owner = $2",
        )
        .bind(id.to_string())
        .bind(owner.to_owned())
        .bind(until)
        .execute(self.db.writer())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Gives the lease up, if `owner` still holds it.
    pub async fn release_lease(&self, id: OrderId, owner: &str) -> Result<(), OrderError> {
        sqlx::query(
            "UPDATE orders SET lease_owner = NULL, lease_until = 0 \
             WHERE order_id = $1 AND lease_owner = $2",
        )
        .bind(id.to_string())
        .bind(owner.to_owned())
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    /// Orders whose saga has work left and nobody drives (no lease, or an
    /// expired one: its runner crashed or stalled), oldest lease first.
    pub async fn orphaned(&self, limit: u32) -> Result<Vec<OrderId>, OrderError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT order_id FROM orders \
             WHERE phase <> 'done' AND (lease_owner IS NULL OR lease_until < $1) \
             ORDER BY lease_until, order_id LIMIT $2",
        )
        .bind(now_micros())
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        ids.iter().map(|id| parse_stored_id(id)).collect()
    }

    /// Applies `change` if `owner` still holds the lease, in one transaction.
    /// False (and nothing written) when the lease was lost.
    pub async fn apply(
        &self,
        id: OrderId,
        owner: &str,
        change: &Transition,
    ) -> Result<bool, OrderError> {
        let now = now_micros();
        // `None` keeps `lease_until` as it is.
        let lease_until = match change.lease {
            Lease::Keep | Lease::Release => None,
            Lease::HoldFor(hold) => Some(now.saturating_add(hold.as_micros() as i64)),
        };
        let mut tx = self.db.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE orders SET \
               phase = COALESCE($3, phase), \
               state = COALESCE($4, state), \
               currency = COALESCE($5, currency), \
               total_minor = COALESCE($6, total_minor), \
               payment_id = COALESCE($7, payment_id), \
               failure_reason = COALESCE($8, failure_reason), \
               failure_message = COALESCE($9, failure_message), \
               payment_token = CASE WHEN $10 = 1 THEN NULL ELSE payment_token END, \
               lease_owner = CASE WHEN $11 = 1 THEN NULL ELSE lease_owner END, \
               lease_until = CASE WHEN $11 = 1 THEN 0 ELSE COALESCE($12, lease_until) END, \
               step_count = step_count + $13, \
               version = version + 1, \
               updated_at = $14 \
             WHERE order_id = $1 AND lease_owner = $2 \
             RETURNING step_count, user_id, currency, total_minor, payment_id, \
               failure_reason, failure_message, cancel_reason",
        )
        .bind(id.to_string())
        .bind(owner.to_owned())
        .bind(change.phase.map(|p| p.as_str().to_owned()))
        .bind(change.state.map(|s| s.as_str().to_owned()))
        .bind(change.prices.as_ref().map(|p| p.total.currency.clone()))
        .bind(change.prices.as_ref().map(|p| p.total.amount_minor))
        .bind(change.payment_id.clone())
        .bind(change.failure.as_ref().map(|f| f.0.clone()))
        .bind(change.failure.as_ref().map(|f| f.1.clone()))
        .bind(i64::from(change.forget_payment_token))
        .bind(i64::from(change.lease == Lease::Release))
        .bind(lease_until)
        .bind(change.steps.len() as i64)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(updated) = updated else {
            // Lease lost: somebody else drives this order now.
            return Ok(false);
        };
        let step_count: i64 = updated.try_get("step_count")?;
        let first_seq = step_count - change.steps.len() as i64 + 1;
        if let Some(prices) = &change.prices {
            for (sku, price) in &prices.lines {
                sqlx::query(
                    "UPDATE order_lines SET unit_price_minor = $3, currency = $4 \
                     WHERE order_id = $1 AND sku = $2",
                )
                .bind(id.to_string())
                .bind(sku.as_str().to_owned())
                .bind(price.amount_minor)
                .bind(price.currency.clone())
                .execute(&mut *tx)
                .await?;
            }
        }
        let event = match change.state {
            Some(state) => events::entered(
                id,
                state,
                events::AfterTransition {
                    user_id: updated.try_get("user_id")?,
                    currency: updated.try_get("currency")?,
                    total_minor: updated.try_get("total_minor")?,
                    payment_id: updated.try_get("payment_id")?,
                    failure_reason: updated.try_get("failure_reason")?,
                    failure_message: updated.try_get("failure_message")?,
                    cancel_reason: updated.try_get("cancel_reason")?,
                },
            ),
            None => None,
        };
        // The steps and the event: one round trip.
        let appended = if change.steps.is_empty() {
            self.outbox.append(&mut tx, event.as_slice()).await?
        } else {
            self.outbox
                .execute_and_append(
                    &mut tx,
                    &insert_steps_sql(change.steps.len()),
                    STEP_COLUMNS * change.steps.len(),
                    |mut insert| {
                        for (offset, step) in change.steps.iter().enumerate() {
                            insert = insert
                                .bind(id.to_string())
                                .bind(first_seq + offset as i64)
                                .bind(step.step.as_str().to_owned())
                                .bind(step.status.as_str().to_owned())
                                .bind(i64::from(step.attempt))
                                .bind(step.effect.as_str().to_owned())
                                .bind(truncate(&step.detail, 1000))
                                .bind(now);
                        }
                        insert
                    },
                    event.as_slice(),
                )
                .await?
                .appended
        };
        tx.commit().await?;
        self.outbox.committed(appended);
        self.announce(id);
        Ok(true)
    }

    /// Starts cancelling a CONFIRMED order: CANCELLING, phase release, lease
    /// to `owner`. One conditional UPDATE, so it cannot interleave with a
    /// saga (a CONFIRMED order has no runner) or another cancellation. False
    /// when the order is not CONFIRMED (any more).
    pub async fn begin_cancel(
        &self,
        id: OrderId,
        owner: &str,
        until: i64,
        reason: &str,
    ) -> Result<bool, OrderError> {
        let result = sqlx::query(
            "UPDATE orders SET state = 'CANCELLING', phase = 'release', cancel_reason = $2, \
               lease_owner = $3, lease_until = $4, version = version + 1, updated_at = $5 \
             WHERE order_id = $1 AND state = 'CONFIRMED'",
        )
        .bind(id.to_string())
        .bind(reason.to_owned())
        .bind(owner.to_owned())
        .bind(until)
        .bind(now_micros())
        .execute(self.db.writer())
        .await?;
        let began = result.rows_affected() == 1;
        if began {
            self.announce(id);
        }
        Ok(began)
    }
}

/// The changes this process commits to one order ([`OrderStore::changes_of`]).
#[derive(Debug)]
pub struct OrderChanges {
    id: OrderId,
    changes: broadcast::Receiver<OrderId>,
}

impl OrderChanges {
    /// The order.
    pub fn id(&self) -> OrderId {
        self.id
    }

    /// Resolves when the order may have changed: it did, or announcements
    /// were missed (too many at once), so re-read it either way. False once
    /// no more announcements can come (the store is gone).
    pub async fn changed(&mut self) -> bool {
        loop {
            match self.changes.recv().await {
                Ok(changed) if changed != self.id => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return true,
                Err(broadcast::error::RecvError::Closed) => return false,
            }
        }
    }
}

/// The columns of one saga step in [`insert_steps_sql`].
const STEP_COLUMNS: usize = 8;

/// `INSERT INTO saga_steps … VALUES (…), (…)` for `rows` steps,
/// [`STEP_COLUMNS`] placeholders each. Only the count varies: the text is
/// ours.
fn insert_steps_sql(rows: usize) -> String {
    format!(
        "INSERT INTO saga_steps (order_id, seq, step, status, attempt, effect, detail, created_at) VALUES {}",
        db::value_rows(STEP_COLUMNS, rows)
    )
}

/// The columns of one order line in [`insert_lines_sql`].
const LINE_COLUMNS: usize = 4;

/// `INSERT INTO order_lines … VALUES (…), (…)` for `rows` lines,
/// [`LINE_COLUMNS`] placeholders each.
fn insert_lines_sql(rows: usize) -> String {
    format!(
        "INSERT INTO order_lines (order_id, line_no, sku, quantity) VALUES {}",
        db::value_rows(LINE_COLUMNS, rows)
    )
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

fn corrupt(what: &str, value: &str) -> OrderError {
    OrderError::from(anyhow::anyhow!("stored {what} {value:?} is not valid"))
}

fn parse_stored_id(id: &str) -> Result<OrderId, OrderError> {
    OrderId::parse(id).map_err(|_| corrupt("order id", id))
}

fn order_from_row(row: &AnyRow) -> Result<OrderRecord, OrderError> {
    let id: String = row.try_get("order_id")?;
    let customer: String = row.try_get("user_id")?;
    let request_id: String = row.try_get("request_id")?;
    let state: String = row.try_get("state")?;
    let phase: String = row.try_get("phase")?;
    let currency: Option<String> = row.try_get("currency")?;
    let total_minor: Option<i64> = row.try_get("total_minor")?;
    let token: Option<String> = row.try_get("payment_token")?;
    Ok(OrderRecord {
        id: parse_stored_id(&id)?,
        customer: CustomerId::parse(&customer).map_err(|_| corrupt("user id", &customer))?,
        request_id: RequestId::parse(&request_id)
            .map_err(|_| corrupt("request id", &request_id))?,
        state: OrderState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        phase: Phase::parse(&phase).ok_or_else(|| corrupt("phase", &phase))?,
        lines: Vec::new(),
        total: match (currency, total_minor) {
            (Some(currency), Some(amount_minor)) => Some(Money {
                currency,
                amount_minor,
            }),
            _ => None,
        },
        payment_id: row.try_get("payment_id")?,
        payment_token: token.map(PaymentToken::from_stored),
        failure_reason: row.try_get("failure_reason")?,
        failure_message: row.try_get("failure_message")?,
        cancel_reason: row.try_get("cancel_reason")?,
        steps: StepLog::default(),
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn line_from_row(row: &AnyRow) -> Result<LineRecord, OrderError> {
    let sku: String = row.try_get("sku")?;
    let quantity: i64 = row.try_get("quantity")?;
    let price: Option<i64> = row.try_get("unit_price_minor")?;
    let currency: Option<String> = row.try_get("currency")?;
    Ok(LineRecord {
        sku: Sku::from_stored(sku),
        quantity: Quantity::parse(quantity)
            .map_err(|_| corrupt("quantity", &quantity.to_string()))?,
        unit_price: match (price, currency) {
            (Some(amount_minor), Some(currency)) => Some(Money {
                currency,
                amount_minor,
            }),
            _ => None,
        },
    })
}

fn step_from_row(row: &AnyRow) -> Result<StepEntry, OrderError> {
    let step: String = row.try_get("step")?;
    let status: String = row.try_get("status")?;
    let effect: String = row.try_get("effect")?;
    let attempt: i64 = row.try_get("attempt")?;
    Ok(StepEntry {
        step: StepKind::parse(&step).ok_or_else(|| corrupt("step", &step))?,
        status: StepStatus::parse(&status).ok_or_else(|| corrupt("step status", &status))?,
        attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
        effect: Effect::parse(&effect).ok_or_else(|| corrupt("step effect", &effect))?,
        detail: row.try_get("detail")?,
        at: row.try_get("created_at")?,
    })
}
