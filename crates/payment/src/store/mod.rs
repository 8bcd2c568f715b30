//! The payment service's tables, one module each, through sqlx `Any` so one
//! query text runs on SQLite and PostgreSQL.
//!
//! Every state change is one short transaction that starts with its write (so
//! SQLite takes the write lock at once instead of failing a lock upgrade) and
//! guards itself with a condition in its `WHERE` clause: the state it expects,
//! and the fencing token (`attempts`) of the lease under which the provider was
//! called. Nothing reads a row, awaits something else, and writes it back.
//! Resolving a charge or a refund also appends its domain event
//! ([`crate::events`]) to the outbox, in the same transaction.
//!
//! - `payments`: `payments` and their history, `payment_transitions`.
//! - `refunds`: `refunds`, and the reservation each holds on its payment.
//! - `lease`: the provider lease both kinds of row carry (claim, release,
//!   the reconciler's stale scan).

mod lease;
mod payments;
mod refunds;

use agora_interceptors::db::{AnyQuery, Database};
use agora_interceptors::outbox::Outbox;
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use crate::domain::{AmountMinor, Currency, Money};
use crate::error::PaymentError;

pub use lease::{LeaseStatements, LeasedId};
pub use payments::{ChargeResolution, InsertPaymentError, PaymentFilter};
pub use refunds::{InsertRefundError, RefundResolution};

/// Reads and writes payments and refunds. Its methods live in the module of
/// the table they change.
#[derive(Clone, Debug)]
pub struct PaymentStore {
    db: Database,
    outbox: Outbox,
}

/// Turns a row a query read into a domain value.
type Decode<T> = fn(&AnyRow) -> Result<T, PaymentError>;

impl PaymentStore {
    /// A store over `db`, whose migrations have been applied.
    pub fn new(db: Database) -> Self {
        let outbox = Outbox::new(db.clone(), "payment");
        Self { db, outbox }
    }

    /// The outbox the payment events go to (written in the transaction of
    /// the change that causes them), for the event feed.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Every row `select` finds with `key` bound to `$1`, decoded.
    async fn find<T>(
        &self,
        select: &'static str,
        key: impl ToString,
        decode: Decode<T>,
    ) -> Result<Vec<T>, PaymentError> {
        let rows = sqlx::query(select)
            .bind(key.to_string())
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(decode).collect()
    }

    /// The row `select` finds by a unique `key`, as [`Self::find`].
    async fn find_one<T>(
        &self,
        select: &'static str,
        key: impl ToString,
        decode: Decode<T>,
    ) -> Result<Option<T>, PaymentError> {
        Ok(self.find(select, key, decode).await?.into_iter().next())
    }

    /// Starts a transaction with `guarded`, a write whose `WHERE` clause
    /// carries its precondition (a state, a fence, an amount still
    /// available). Returns the open transaction when the write matched one
    /// row; otherwise rolls back and returns `None`: the precondition no
    /// longer holds, and nothing was changed.
    async fn begin_guarded(
        &self,
        guarded: AnyQuery,
    ) -> Result<Option<Transaction<'static, Any>>, PaymentError> {
        let mut tx = self.db.begin_write().await?;
        if guarded.execute(&mut *tx).await?.rows_affected() == 1 {
            Ok(Some(tx))
        } else {
            tx.rollback().await?;
            Ok(None)
        }
    }
}

/// A stored value that fails to parse is corruption, not a caller's mistake.
fn parse_stored<T, E: std::fmt::Display>(
    parse: impl FnOnce(&str) -> Result<T, E>,
    value: String,
) -> Result<T, PaymentError> {
    parse(&value).map_err(|e| PaymentError::from(anyhow::anyhow!("stored value {value:?}: {e}")))
}

/// An amount and currency as both tables store them.
fn money(amount: i64, currency: String) -> Result<Money, PaymentError> {
    Ok(Money {
        amount: parse_stored(|_| AmountMinor::parse(amount), amount.to_string())?,
        currency: parse_stored(Currency::parse, currency)?,
    })
}
