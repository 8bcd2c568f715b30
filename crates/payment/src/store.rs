//! The `payments`, `payment_transitions` and `refunds` tables.
//!
//! Every state change is one short transaction that starts with its write (so
//! SQLite takes the write lock at once instead of failing a lock upgrade) and
//! guards itself with a condition in its `WHERE` clause: the state it expects,
//! and the fencing token (`attempts`) of the lease under which the provider was
//! called. Nothing reads a row, awaits something else, and writes it back.

use agora_interceptors::db::{self, Database};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, Row};

use crate::domain::{
    AmountMinor, ChargeCommand, Currency, Money, OrderId, Payment, PaymentId, PaymentState, Refund,
    RefundCommand, RefundId, RefundState, Transition, UserId,
};
use crate::error::PaymentError;

/// The payment columns every query reads, as a literal so queries stay
/// `&'static str` (sqlx refuses SQL built at run time).
macro_rules! payment_columns {
    () => {
        "p.payment_id, p.order_id, p.user_id, p.amount_minor, p.currency_code, \
         p.refunded_minor, p.refund_reserved_minor, p.state, p.decline_reason, p.provider_reference, \
         p.idempotency_key, p.request_fingerprint, p.attempts, p.lease_until, \
         p.created_at, p.updated_at"
    };
}

/// The refund columns every query reads.
macro_rules! refund_columns {
    () => {
        "r.refund_id, r.payment_id, r.amount_minor, r.currency_code, r.reason, r.state, \
         r.failure_reason, r.provider_reference, r.idempotency_key, r.request_fingerprint, \
         r.attempts, r.lease_until, r.created_at, r.updated_at"
    };
}

/// Appends a transition, in the same transaction as the change it records.
const INSERT_TRANSITION: &str = "INSERT INTO payment_transitions (payment_id, state, note, created_at) \
     VALUES ($1, $2, $3, $4)";

/// How a charge attempt ended at the provider, as it is recorded.
#[derive(Clone, Debug)]
pub struct ChargeResolution {
    /// CAPTURED, DECLINED or FAILED.
    pub state: PaymentState,
    /// Why it was declined or failed.
    pub reason: String,
    /// The provider's id, when it gave one.
    pub provider_reference: String,
}

/// Why a new payment could not be recorded.
#[derive(Debug)]
pub enum InsertPaymentError {
    /// The idempotency key, or the order's one live payment, is taken (SQLite
    /// does not say which constraint; the caller looks both up).
    Conflict,
    /// Anything else.
    Db(PaymentError),
}

/// Why a new refund could not be recorded.
#[derive(Debug)]
pub enum InsertRefundError {
    /// The idempotency key is taken.
    KeyTaken,
    /// The payment is not refundable, or not for that much any more.
    NotReservable,
    /// Anything else.
    Db(PaymentError),
}

/// Which payments a list covers.
#[derive(Clone, Copy, Debug, Default)]
pub struct PaymentFilter {
    /// Only this order's.
    pub order_id: Option<OrderId>,
    /// Only this customer's.
    pub user_id: Option<UserId>,
}

/// A PENDING charge whose lease has expired, for the reconciler.
#[derive(Debug)]
pub struct StalePayment {
    /// Its id.
    pub id: PaymentId,
    /// The token to charge with; `None` should not happen for a PENDING
    /// payment and is reported rather than guessed at.
    pub token: Option<String>,
}

/// Reads and writes payments and refunds.
#[derive(Clone, Debug)]
pub struct PaymentStore {
    db: Database,
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, AnyArguments>;

impl PaymentStore {
    /// A store over `db`, whose migrations have been applied.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    // === payments ===

    /// Records a new PENDING payment (and its first transition), holding the
    /// provider lease until `lease_until` with fencing token 1.
    pub async fn insert_pending(
        &self,
        id: PaymentId,
        command: &ChargeCommand,
        lease_until: i64,
        now: i64,
    ) -> Result<(), InsertPaymentError> {
        let db_err = |e: sqlx::Error| match db::unique_violation(&e) {
            Some(_) => InsertPaymentError::Conflict,
            None => InsertPaymentError::Db(e.into()),
        };
        let mut tx = self.db.pool().begin().await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO payments (payment_id, order_id, user_id, amount_minor, currency_code, \
               state, idempotency_key, request_fingerprint, payment_method_token, live_order_id, \
               attempts, lease_until, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7, $8, $2, 1, $9, $10, $10)",
        )
        .bind(id.to_string())
        .bind(command.order_id.to_string())
        .bind(command.user_id.to_string())
        .bind(command.amount.amount.get())
        .bind(command.amount.currency.to_string())
        .bind(command.idempotency_key.as_str().to_owned())
        .bind(command.fingerprint())
        .bind(command.token.as_str().to_owned())
        .bind(lease_until)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(INSERT_TRANSITION)
            .bind(id.to_string())
            .bind(PaymentState::Pending.as_str())
            .bind("")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    /// The payment recorded under a Charge idempotency key, without its
    /// refunds and history.
    pub async fn find_by_key(&self, key: &str) -> Result<Option<Payment>, PaymentError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments p WHERE p.idempotency_key = $1"
        ))
        .bind(key.to_owned())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| payment_from_row(&row)).transpose()
    }

    /// The order's payment that is PENDING or succeeded, if any.
    pub async fn live_for_order(&self, order_id: OrderId) -> Result<Option<Payment>, PaymentError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments p WHERE p.live_order_id = $1"
        ))
        .bind(order_id.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| payment_from_row(&row)).transpose()
    }

    /// The payment's row alone (no refunds, no history).
    pub async fn get_row(&self, id: PaymentId) -> Result<Option<Payment>, PaymentError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments p WHERE p.payment_id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| payment_from_row(&row)).transpose()
    }

    /// The payment with its completed refunds and its history.
    pub async fn get(&self, id: PaymentId) -> Result<Option<Payment>, PaymentError> {
        let Some(mut payment) = self.get_row(id).await? else {
            return Ok(None);
        };
        let transitions = sqlx::query(
            "SELECT payment_id, state, note, created_at FROM payment_transitions \
             WHERE payment_id = $1 ORDER BY transition_id",
        )
        .bind(id.to_string())
        .fetch_all(self.db.pool())
        .await?;
        for row in &transitions {
            payment.history.push(transition_from_row(row)?.1);
        }
        let refunds = sqlx::query(concat!(
            "SELECT ",
            refund_columns!(),
            " FROM refunds r WHERE r.payment_id = $1 AND r.state = 'SUCCEEDED' ORDER BY r.refund_id"
        ))
        .bind(id.to_string())
        .fetch_all(self.db.pool())
        .await?;
        for row in &refunds {
            payment.refunds.push(refund_from_row(row)?);
        }
        Ok(Some(payment))
    }

    /// Takes the provider lease of a PENDING payment whose lease is free or
    /// expired; returns the new fencing token, or `None` when someone else
    /// holds the lease or the payment is no longer PENDING.
    pub async fn claim(
        &self,
        id: PaymentId,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<i64>, PaymentError> {
        let row = sqlx::query(
            "UPDATE payments SET attempts = attempts + 1, lease_until = $3, updated_at = $2 \
             WHERE payment_id = $1 AND state = 'PENDING' AND lease_until < $2 \
             RETURNING attempts",
        )
        .bind(id.to_string())
        .bind(now)
        .bind(lease_until)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row
            .map(|row| row.try_get::<i64, _>("attempts"))
            .transpose()?)
    }

    /// Gives the lease back after a transient provider failure, so the next
    /// retry may call the provider again at once. False when the lease was
    /// lost meanwhile.
    pub async fn release(&self, id: PaymentId, fence: i64, now: i64) -> Result<bool, PaymentError> {
        let result = sqlx::query(
            "UPDATE payments SET lease_until = 0, updated_at = $3 \
             WHERE payment_id = $1 AND state = 'PENDING' AND attempts = $2",
        )
        .bind(id.to_string())
        .bind(fence)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Records the provider's final answer to a charge made under lease
    /// `fence`: the new state, the provider's reference, and the transition.
    /// The token is erased; a DECLINED or FAILED payment stops counting as the
    /// order's live payment. False when the lease was lost (another driver
    /// records the same answer, since the provider answers a key once).
    pub async fn resolve(
        &self,
        id: PaymentId,
        fence: i64,
        resolution: &ChargeResolution,
        now: i64,
    ) -> Result<bool, PaymentError> {
        let mut tx = self.db.pool().begin().await?;
        let result = sqlx::query(
            "UPDATE payments SET state = $3, decline_reason = $4, provider_reference = $5, \
               payment_method_token = NULL, lease_until = 0, updated_at = $6, \
               live_order_id = CASE WHEN $3 = 'CAPTURED' THEN order_id ELSE NULL END \
             WHERE payment_id = $1 AND state = 'PENDING' AND attempts = $2",
        )
        .bind(id.to_string())
        .bind(fence)
        .bind(resolution.state.as_str())
        .bind(resolution.reason.clone())
        .bind(resolution.provider_reference.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(INSERT_TRANSITION)
            .bind(id.to_string())
            .bind(resolution.state.as_str())
            .bind(resolution.reason.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// PENDING payments whose lease expired before `now` and that nobody
    /// touched since `untouched_since`, oldest first.
    pub async fn stale_payments(
        &self,
        now: i64,
        untouched_since: i64,
        limit: i64,
    ) -> Result<Vec<StalePayment>, PaymentError> {
        let rows = sqlx::query(
            "SELECT payment_id, payment_method_token FROM payments \
             WHERE state = 'PENDING' AND lease_until < $1 AND updated_at <= $2 \
             ORDER BY payment_id LIMIT $3",
        )
        .bind(now)
        .bind(untouched_since)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StalePayment {
                    id: parse_stored(PaymentId::parse, row.try_get("payment_id")?)?,
                    token: row.try_get("payment_method_token")?,
                })
            })
            .collect()
    }

    /// The token of a PENDING payment (for re-driving it without the caller).
    pub async fn pending_token(&self, id: PaymentId) -> Result<Option<String>, PaymentError> {
        let row = sqlx::query(
            "SELECT payment_method_token FROM payments WHERE payment_id = $1 AND state = 'PENDING'",
        )
        .bind(id.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row
            .map(|row| row.try_get::<Option<String>, _>("payment_method_token"))
            .transpose()?
            .flatten())
    }

    /// Up to `limit` payments matching `filter` with ids after `after`, oldest
    /// first (UUIDv7 ids sort by creation time), with refunds and history.
    pub async fn list(
        &self,
        filter: PaymentFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Payment>, PaymentError> {
        let after = after.unwrap_or_default().to_owned();

        // Each filter has its own statement so every one can use its index.
        macro_rules! page {
            ($where:literal) => {
                concat!(
                    "SELECT ",
                    payment_columns!(),
                    " FROM payments p WHERE p.payment_id > $1",
                    $where,
                    " ORDER BY p.payment_id LIMIT $2"
                )
            };
        }
        let sql = match filter {
            PaymentFilter {
                order_id: None,
                user_id: None,
            } => page!(""),
            PaymentFilter {
                order_id: Some(_),
                user_id: None,
            } => page!(" AND p.order_id = $3"),
            PaymentFilter {
                order_id: None,
                user_id: Some(_),
            } => page!(" AND p.user_id = $3"),
            PaymentFilter {
                order_id: Some(_),
                user_id: Some(_),
            } => page!(" AND p.order_id = $3 AND p.user_id = $4"),
        };
        let query = sqlx::query(sql).bind(after.clone()).bind(i64::from(limit));
        let rows = bind_filter(query, filter).fetch_all(self.db.pool()).await?;
        let mut payments = rows
            .iter()
            .map(payment_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(last) = payments.last().map(|p| p.id.to_string()) else {
            return Ok(payments);
        };

        // The page is exactly the matching payments with ids in (after, last],
        // so the children of the page come from the same filter over that range.
        macro_rules! children {
            ($select:literal, $from:literal, $extra:literal, $where:literal, $order:literal) => {
                concat!(
                    $select,
                    $from,
                    " JOIN payments p ON p.payment_id = x.payment_id \
                     WHERE p.payment_id > $1 AND p.payment_id <= $2",
                    $extra,
                    $where,
                    $order
                )
            };
        }
        macro_rules! transitions {
            ($where:literal) => {
                children!(
                    "SELECT x.payment_id, x.state, x.note, x.created_at",
                    " FROM payment_transitions x",
                    "",
                    $where,
                    " ORDER BY x.payment_id, x.transition_id"
                )
            };
        }
        macro_rules! refunds {
            ($where:literal) => {
                children!(
                    "SELECT x.refund_id, x.payment_id, x.amount_minor, x.currency_code, x.reason, \
                     x.state, x.failure_reason, x.provider_reference, x.idempotency_key, \
                     x.request_fingerprint, x.attempts, x.lease_until, x.created_at, x.updated_at",
                    " FROM refunds x",
                    " AND x.state = 'SUCCEEDED'",
                    $where,
                    " ORDER BY x.payment_id, x.refund_id"
                )
            };
        }
        let (transitions_sql, refunds_sql) = match filter {
            PaymentFilter {
                order_id: None,
                user_id: None,
            } => (transitions!(""), refunds!("")),
            PaymentFilter {
                order_id: Some(_),
                user_id: None,
            } => (
                transitions!(" AND p.order_id = $3"),
                refunds!(" AND p.order_id = $3"),
            ),
            PaymentFilter {
                order_id: None,
                user_id: Some(_),
            } => (
                transitions!(" AND p.user_id = $3"),
                refunds!(" AND p.user_id = $3"),
            ),
            PaymentFilter {
                order_id: Some(_),
                user_id: Some(_),
            } => (
                transitions!(" AND p.order_id = $3 AND p.user_id = $4"),
                refunds!(" AND p.order_id = $3 AND p.user_id = $4"),
            ),
        };
        let transitions = bind_filter(
            sqlx::query(transitions_sql)
                .bind(after.clone())
                .bind(last.clone()),
            filter,
        )
        .fetch_all(self.db.pool())
        .await?;
        let refunds = bind_filter(sqlx::query(refunds_sql).bind(after).bind(last), filter)
            .fetch_all(self.db.pool())
            .await?;

        let index: std::collections::HashMap<PaymentId, usize> = payments
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id, i))
            .collect();
        for row in &transitions {
            let (payment_id, transition) = transition_from_row(row)?;
            if let Some(&i) = index.get(&payment_id) {
                payments[i].history.push(transition);
            }
        }
        for row in &refunds {
            let refund = refund_from_row(row)?;
            if let Some(&i) = index.get(&refund.payment_id) {
                payments[i].refunds.push(refund);
            }
        }
        Ok(payments)
    }

    // === refunds ===

    /// Records a PENDING refund and reserves its amount on the payment, in one
    /// transaction: the reservation succeeds only while the payment is
    /// CAPTURED or PARTIALLY_REFUNDED and refunded + reserved + this amount
    /// stays within the amount captured, so concurrent refunds can never
    /// exceed it whatever order the provider answers them in.
    pub async fn insert_refund(
        &self,
        id: RefundId,
        command: &RefundCommand,
        lease_until: i64,
        now: i64,
    ) -> Result<(), InsertRefundError> {
        let db_err = |e: sqlx::Error| InsertRefundError::Db(e.into());
        let mut tx = self.db.pool().begin().await.map_err(db_err)?;
        let reserved = sqlx::query(
            "UPDATE payments SET refund_reserved_minor = refund_reserved_minor + $2, updated_at = $3 \
             WHERE payment_id = $1 AND state IN ('CAPTURED', 'PARTIALLY_REFUNDED') \
               AND currency_code = $4 \
               AND refunded_minor + refund_reserved_minor + $2 <= amount_minor",
        )
        .bind(command.payment_id.to_string())
        .bind(command.amount.amount.get())
        .bind(now)
        .bind(command.amount.currency.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if reserved.rows_affected() != 1 {
            tx.rollback().await.map_err(db_err)?;
            return Err(InsertRefundError::NotReservable);
        }
        let inserted = sqlx::query(
            "INSERT INTO refunds (refund_id, payment_id, amount_minor, currency_code, reason, \
               state, idempotency_key, request_fingerprint, attempts, lease_until, created_at, \
               updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7, 1, $8, $9, $9)",
        )
        .bind(id.to_string())
        .bind(command.payment_id.to_string())
        .bind(command.amount.amount.get())
        .bind(command.amount.currency.to_string())
        .bind(command.reason.as_str().to_owned())
        .bind(command.idempotency_key.as_str().to_owned())
        .bind(command.fingerprint())
        .bind(lease_until)
        .bind(now)
        .execute(&mut *tx)
        .await;
        if let Err(error) = inserted {
            // Dropping the transaction rolls the reservation back.
            drop(tx);
            return Err(match db::unique_violation(&error) {
                Some(_) => InsertRefundError::KeyTaken,
                None => InsertRefundError::Db(error.into()),
            });
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    /// The refund recorded under a Refund idempotency key.
    pub async fn find_refund_by_key(&self, key: &str) -> Result<Option<Refund>, PaymentError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            refund_columns!(),
            " FROM refunds r WHERE r.idempotency_key = $1"
        ))
        .bind(key.to_owned())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| refund_from_row(&row)).transpose()
    }

    /// A refund by id.
    pub async fn get_refund(&self, id: RefundId) -> Result<Option<Refund>, PaymentError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            refund_columns!(),
            " FROM refunds r WHERE r.refund_id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| refund_from_row(&row)).transpose()
    }

    /// Takes the provider lease of a PENDING refund (as [`Self::claim`]).
    pub async fn claim_refund(
        &self,
        id: RefundId,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<i64>, PaymentError> {
        let row = sqlx::query(
            "UPDATE refunds SET attempts = attempts + 1, lease_until = $3, updated_at = $2 \
             WHERE refund_id = $1 AND state = 'PENDING' AND lease_until < $2 \
             RETURNING attempts",
        )
        .bind(id.to_string())
        .bind(now)
        .bind(lease_until)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row
            .map(|row| row.try_get::<i64, _>("attempts"))
            .transpose()?)
    }

    /// Gives a refund's lease back after a transient provider failure.
    pub async fn release_refund(
        &self,
        id: RefundId,
        fence: i64,
        now: i64,
    ) -> Result<bool, PaymentError> {
        let result = sqlx::query(
            "UPDATE refunds SET lease_until = 0, updated_at = $3 \
             WHERE refund_id = $1 AND state = 'PENDING' AND attempts = $2",
        )
        .bind(id.to_string())
        .bind(fence)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Records a refund the provider made: the refund SUCCEEDED, its
    /// reservation turned into refunded money, the payment PARTIALLY_REFUNDED
    /// or (when nothing remains) REFUNDED, and a transition noting the refund.
    pub async fn complete_refund(
        &self,
        refund: &Refund,
        fence: i64,
        provider_reference: &str,
        now: i64,
    ) -> Result<bool, PaymentError> {
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query(
            "UPDATE refunds SET state = 'SUCCEEDED', provider_reference = $3, lease_until = 0, \
               updated_at = $4 \
             WHERE refund_id = $1 AND state = 'PENDING' AND attempts = $2",
        )
        .bind(refund.id.to_string())
        .bind(fence)
        .bind(provider_reference.to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let row = sqlx::query(
            "UPDATE payments SET refunded_minor = refunded_minor + $2, \
               refund_reserved_minor = refund_reserved_minor - $2, \
               state = CASE WHEN refunded_minor + $2 = amount_minor \
                            THEN 'REFUNDED' ELSE 'PARTIALLY_REFUNDED' END, \
               updated_at = $3 \
             WHERE payment_id = $1 RETURNING state",
        )
        .bind(refund.payment_id.to_string())
        .bind(refund.amount.amount.get())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let state: String = row.try_get("state")?;
        sqlx::query(INSERT_TRANSITION)
            .bind(refund.payment_id.to_string())
            .bind(state)
            .bind(format!("refund {}", refund.id))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a refund the provider refused: FAILED, and its reservation
    /// released.
    pub async fn fail_refund(
        &self,
        refund: &Refund,
        fence: i64,
        reason: &str,
        now: i64,
    ) -> Result<bool, PaymentError> {
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query(
            "UPDATE refunds SET state = 'FAILED', failure_reason = $3, lease_until = 0, \
               updated_at = $4 \
             WHERE refund_id = $1 AND state = 'PENDING' AND attempts = $2",
        )
        .bind(refund.id.to_string())
        .bind(fence)
        .bind(reason.to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE payments SET refund_reserved_minor = refund_reserved_minor - $2, \
               updated_at = $3 WHERE payment_id = $1",
        )
        .bind(refund.payment_id.to_string())
        .bind(refund.amount.amount.get())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// PENDING refunds whose lease expired, untouched since `untouched_since`.
    pub async fn stale_refunds(
        &self,
        now: i64,
        untouched_since: i64,
        limit: i64,
    ) -> Result<Vec<RefundId>, PaymentError> {
        let rows = sqlx::query(
            "SELECT refund_id FROM refunds \
             WHERE state = 'PENDING' AND lease_until < $1 AND updated_at <= $2 \
             ORDER BY refund_id LIMIT $3",
        )
        .bind(now)
        .bind(untouched_since)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| parse_stored(RefundId::parse, row.try_get("refund_id")?))
            .collect()
    }
}

/// Binds a list's filter values after `$1` and `$2`, in the order the
/// statements number them (order, then user).
fn bind_filter(query: AnyQuery<'static>, filter: PaymentFilter) -> AnyQuery<'static> {
    let query = match filter.order_id {
        Some(order) => query.bind(order.to_string()),
        None => query,
    };
    match filter.user_id {
        Some(user) => query.bind(user.to_string()),
        None => query,
    }
}

/// A stored value that fails to parse is corruption, not a caller's mistake.
fn parse_stored<T, E: std::fmt::Display>(
    parse: impl FnOnce(&str) -> Result<T, E>,
    value: String,
) -> Result<T, PaymentError> {
    parse(&value).map_err(|e| PaymentError::from(anyhow::anyhow!("stored value {value:?}: {e}")))
}

fn money(amount: i64, currency: String) -> Result<Money, PaymentError> {
    Ok(Money {
        amount: parse_stored(|_| AmountMinor::parse(amount), amount.to_string())?,
        currency: parse_stored(Currency::parse, currency)?,
    })
}

fn payment_from_row(row: &AnyRow) -> Result<Payment, PaymentError> {
    let state: String = row.try_get("state")?;
    Ok(Payment {
        id: parse_stored(PaymentId::parse, row.try_get("payment_id")?)?,
        order_id: parse_stored(OrderId::parse, row.try_get("order_id")?)?,
        user_id: parse_stored(UserId::parse, row.try_get("user_id")?)?,
        amount: money(row.try_get("amount_minor")?, row.try_get("currency_code")?)?,
        refunded_minor: row.try_get("refunded_minor")?,
        refund_reserved_minor: row.try_get("refund_reserved_minor")?,
        state: parse_stored(|s| PaymentState::parse(s).ok_or("unknown state"), state)?,
        decline_reason: row.try_get("decline_reason")?,
        provider_reference: row.try_get("provider_reference")?,
        idempotency_key: row.try_get("idempotency_key")?,
        request_fingerprint: row.try_get("request_fingerprint")?,
        attempts: row.try_get("attempts")?,
        lease_until: row.try_get("lease_until")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        refunds: Vec::new(),
        history: Vec::new(),
    })
}

fn transition_from_row(row: &AnyRow) -> Result<(PaymentId, Transition), PaymentError> {
    let state: String = row.try_get("state")?;
    Ok((
        parse_stored(PaymentId::parse, row.try_get("payment_id")?)?,
        Transition {
            state: parse_stored(|s| PaymentState::parse(s).ok_or("unknown state"), state)?,
            at: row.try_get("created_at")?,
            note: row.try_get("note")?,
        },
    ))
}

fn refund_from_row(row: &AnyRow) -> Result<Refund, PaymentError> {
    let state: String = row.try_get("state")?;
    Ok(Refund {
        id: parse_stored(RefundId::parse, row.try_get("refund_id")?)?,
        payment_id: parse_stored(PaymentId::parse, row.try_get("payment_id")?)?,
        amount: money(row.try_get("amount_minor")?, row.try_get("currency_code")?)?,
        reason: row.try_get("reason")?,
        state: parse_stored(|s| RefundState::parse(s).ok_or("unknown state"), state)?,
        failure_reason: row.try_get("failure_reason")?,
        provider_reference: row.try_get("provider_reference")?,
        idempotency_key: row.try_get("idempotency_key")?,
        request_fingerprint: row.try_get("request_fingerprint")?,
        attempts: row.try_get("attempts")?,
        lease_until: row.try_get("lease_until")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
