//! The inventory tables, through sqlx `Any` so one query text runs on SQLite
//! and PostgreSQL.
//!
//! How stock stays right under concurrency, on both engines:
//! - every change to stock is a *conditional* `UPDATE` (`… WHERE on_hand -
//!   reserved >= $n`), so the check and the change are one atomic statement
//!   and no value read earlier is ever written back;
//! - an operation that touches several rows runs in one transaction and
//!   locks rows in one global order (its reservation row first, then products
//!   by sku), so two operations never wait on each other in a cycle;
//! - state changes of a reservation are conditional on the state they leave
//!   (`… WHERE state = 'HELD'`), so each transition happens exactly once
//!   however many callers (or sweepers) race for it;
//! - on SQLite a write transaction starts with `BEGIN IMMEDIATE`: it takes the
//!   write lock at once, waiting under the busy timeout, instead of upgrading
//!   a read lock later, which SQLite would refuse outright (SQLITE_BUSY);
//! - the `products_stock_check` constraint keeps `0 <= reserved <= on_hand`
//!   in the database itself, as a last line of defence.
//!
//! - [`catalog`]: products and stock adjustments.
//! - [`reservations`]: reserve, commit, release and expire.

pub mod catalog;
pub mod reservations;

use std::future::Future;
use std::time::Duration;

use agora_interceptors::db::{Database, corrupt};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::domain::{
    Currency, Description, OrderId, Price, Product, ProductName, Quantity, Reservation,
    ReservationState, ReservedLine, Sku,
};
use crate::error::InventoryError;

pub use catalog::Catalog;
pub use reservations::Reservations;

/// How many times an idempotent operation is run in all when its
/// transaction collides with another or loses its connection.
const ATTEMPTS: u32 = 4;

/// Starts a write transaction: `BEGIN IMMEDIATE` on SQLite (see the module
/// comment), a plain READ COMMITTED `BEGIN` on PostgreSQL, whose row locks
/// and re-checked `WHERE` clauses make conditional updates safe.
pub(crate) async fn begin_write(db: &Database) -> Result<Transaction<'static, Any>, sqlx::Error> {
    db.begin_write().await
}

/// Runs `operation` until it succeeds, fails for a reason a repeat cannot
/// fix, or has been tried [`ATTEMPTS`] times. Only for operations that are
/// idempotent as a whole, so a repeat after an ambiguous commit is harmless.
pub(crate) async fn retrying<T, F, Fut>(what: &str, mut operation: F) -> Result<T, InventoryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, InventoryError>>,
{
    let mut attempt = 1;
    loop {
        match operation().await {
            Err(error) if error.is_retryable() && attempt < ATTEMPTS => {
                tracing::debug!(%error, attempt, "{what}: retrying after a transient failure");
                // 5, 20, 45 ms: short, since collisions clear as soon as the
                // other transaction ends.
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt * attempt))).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// The product columns every query reads, as a literal so queries stay
/// `&'static str` (sqlx refuses SQL built at run time).
macro_rules! product_columns {
    () => {
        "sku, name, description, price_minor, currency_code, on_hand, reserved, low_stock_threshold, \
         created_at, updated_at"
    };
}
pub(crate) use product_columns;

pub(crate) fn product_from_row(row: &AnyRow) -> Result<Product, InventoryError> {
    let currency: String = row.try_get("currency_code")?;
    let currency = Currency::parse(&currency).map_err(|_| corrupt("currency", &currency))?;
    let price_minor: i64 = row.try_get("price_minor")?;
    Ok(Product {
        sku: Sku::from_stored(row.try_get("sku")?),
        name: ProductName::from_stored(row.try_get("name")?),
        description: Description::from_stored(row.try_get("description")?),
        price: Price::new(price_minor, currency).map_err(|_| corrupt("price", price_minor))?,
        on_hand: row.try_get("on_hand")?,
        reserved: row.try_get("reserved")?,
        low_stock_threshold: row.try_get("low_stock_threshold")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The reservation columns [`reservation_from_row`] reads, as a literal
/// (see [`product_columns`]).
macro_rules! reservation_columns {
    () => {
        "order_id, state, currency_code, total_minor, expires_at, created_at, updated_at"
    };
}
pub(crate) use reservation_columns;

/// Reads one reservation and its lines with `conn` (the pool, or a
/// transaction that has locked the reservation).
pub(crate) async fn load_reservation(
    conn: &mut sqlx::AnyConnection,
    order_id: OrderId,
) -> Result<Option<Reservation>, InventoryError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        reservation_columns!(),
        " FROM reservations WHERE order_id = $1"
    ))
    .bind(order_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => Ok(Some(reservation_from_row(conn, order_id, &row).await?)),
        None => Ok(None),
    }
}

/// The reservation of `order_id` from its row's [`reservation_columns`]
/// (read, or returned by the statement that changed it), with its lines
/// read with `conn`.
pub(crate) async fn reservation_from_row(
    conn: &mut sqlx::AnyConnection,
    order_id: OrderId,
    row: &AnyRow,
) -> Result<Reservation, InventoryError> {
    let lines = load_lines(conn, order_id).await?;
    let state: String = row.try_get("state")?;
    let currency: String = row.try_get("currency_code")?;
    Ok(Reservation {
        order_id,
        state: ReservationState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        lines,
        currency: Currency::parse(&currency).map_err(|_| corrupt("currency", &currency))?,
        total_minor: row.try_get("total_minor")?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The lines of a reservation in sku order, the order rows are locked in.
pub(crate) async fn load_lines(
    conn: &mut sqlx::AnyConnection,
    order_id: OrderId,
) -> Result<Vec<ReservedLine>, InventoryError> {
    let rows = sqlx::query(
        "SELECT sku, quantity, unit_price_minor FROM reservation_lines \
         WHERE order_id = $1 ORDER BY sku",
    )
    .bind(order_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ReservedLine {
                sku: Sku::from_stored(row.try_get("sku")?),
                quantity: Quantity::from_stored(row.try_get("quantity")?),
                unit_price_minor: row.try_get("unit_price_minor")?,
            })
        })
        .collect()
}
