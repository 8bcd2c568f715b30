//! The `payments` table and its history, `payment_transitions`: recording a
//! charge, resolving it under its lease, and reading payments as the API
//! shows them (with their completed refunds, whose columns and decoding come
//! from [`super::refunds`]).

use std::collections::HashMap;

use agora_interceptors::db;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::refunds::{refund_columns, refund_from_row, select_refunds};
use super::{AnyQuery, PaymentStore, money, parse_stored};
use crate::domain::{ChargeCommand, OrderId, Payment, PaymentId, PaymentState, Transition, UserId};
use crate::error::PaymentError;
use crate::events;

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

/// `SELECT`s a payment row by the condition `$where` on `p`.
macro_rules! select_payments {
    ($where:literal) => {
        concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments p WHERE ",
            $where
        )
    };
}

/// The transition columns every query reads.
macro_rules! transition_columns {
    () => {
        "t.payment_id, t.state, t.note, t.created_at"
    };
}

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

/// Which payments a list covers.
#[derive(Clone, Copy, Debug, Default)]
pub struct PaymentFilter {
    /// Only this order's.
    pub order_id: Option<OrderId>,
    /// Only this customer's.
    pub user_id: Option<UserId>,
}

impl PaymentFilter {
    /// Which of the [`per_filter!`] statements serves this filter.
    fn shape(self) -> usize {
        match (self.order_id, self.user_id) {
            (None, None) => 0,
            (Some(_), None) => 1,
            (None, Some(_)) => 2,
            (Some(_), Some(_)) => 3,
        }
    }

    /// Binds the filter's values after a list statement's `$1` and `$2`, in
    /// the order the statements number them (order, then user).
    fn bind(self, query: AnyQuery) -> AnyQuery {
        let query = match self.order_id {
            Some(order) => query.bind(order.to_string()),
            None => query,
        };
        match self.user_id {
            Some(user) => query.bind(user.to_string()),
            None => query,
        }
    }
}

/// The four texts of a list statement, one per filter shape in
/// [`PaymentFilter::shape`] order, so that each can use its own index.
/// `$statement` is a macro taking the filter's extra condition on `p`.
macro_rules! per_filter {
    ($statement:ident) => {
        [
            $statement!(""),
            $statement!(" AND p.order_id = $3"),
            $statement!(" AND p.user_id = $3"),
            $statement!(" AND p.order_id = $3 AND p.user_id = $4"),
        ]
    };
}

/// A page of payments: ids after `$1`, at most `$2`.
macro_rules! page {
    ($filter:literal) => {
        concat!(
            select_payments!("p.payment_id > $1"),
            $filter,
            " ORDER BY p.payment_id LIMIT $2"
        )
    };
}

/// Rows of a child table (`$from`, aliased `$alias`, keyed by `payment_id`)
/// that belong to a page whose payments have ids in (`$1`, `$2`]: the page is
/// exactly the payments in that range that match the filter, so its children
/// come from the same filter over that range.
macro_rules! page_children {
    ($columns:expr, $from:literal, $alias:literal, $extra:literal, $filter:literal, $order:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM ",
            $from,
            " JOIN payments p ON p.payment_id = ",
            $alias,
            ".payment_id WHERE p.payment_id > $1 AND p.payment_id <= $2",
            $extra,
            $filter,
            " ORDER BY ",
            $order
        )
    };
}

/// The history of a page.
macro_rules! page_transitions {
    ($filter:literal) => {
        page_children!(
            transition_columns!(),
            "payment_transitions t",
            "t",
            "",
            $filter,
            "t.payment_id, t.transition_id"
        )
    };
}

/// The completed refunds of a page.
macro_rules! page_refunds {
    ($filter:literal) => {
        page_children!(
            refund_columns!(),
            "refunds r",
            "r",
            " AND r.state = 'SUCCEEDED'",
            $filter,
            "r.payment_id, r.refund_id"
        )
    };
}

const LIST_PAGE: [&str; 4] = per_filter!(page);
const LIST_TRANSITIONS: [&str; 4] = per_filter!(page_transitions);
const LIST_REFUNDS: [&str; 4] = per_filter!(page_refunds);

impl PaymentStore {
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
        let mut tx = self.db.begin_write().await.map_err(db_err)?;
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
        append_transition(&mut tx, id, PaymentState::Pending, String::new(), now)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    /// The payment recorded under a Charge idempotency key, without its
    /// refunds and history.
    pub async fn find_by_key(&self, key: &str) -> Result<Option<Payment>, PaymentError> {
        let select = select_payments!("p.idempotency_key = $1");
        self.find_one(select, key, payment_from_row).await
    }

    /// The order's payment that is PENDING or succeeded, if any.
    pub async fn live_for_order(&self, order_id: OrderId) -> Result<Option<Payment>, PaymentError> {
        let select = select_payments!("p.live_order_id = $1");
        self.find_one(select, order_id, payment_from_row).await
    }

    /// The payment's row alone (no refunds, no history).
    pub async fn get_row(&self, id: PaymentId) -> Result<Option<Payment>, PaymentError> {
        let select = select_payments!("p.payment_id = $1");
        self.find_one(select, id, payment_from_row).await
    }

    /// The payment with its completed refunds and its history.
    pub async fn get(&self, id: PaymentId) -> Result<Option<Payment>, PaymentError> {
        let Some(mut payment) = self.get_row(id).await? else {
            return Ok(None);
        };
        payment.history = self
            .find(
                concat!(
                    "SELECT ",
                    transition_columns!(),
                    " FROM payment_transitions t WHERE t.payment_id = $1 ORDER BY t.transition_id"
                ),
                id,
                |row| Ok(transition_from_row(row)?.1),
            )
            .await?;
        payment.refunds = self
            .find(
                select_refunds!("r.payment_id = $1 AND r.state = 'SUCCEEDED' ORDER BY r.refund_id"),
                id,
                refund_from_row,
            )
            .await?;
        Ok(Some(payment))
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
        let resolve = sqlx::query(
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
        .bind(now);
        let Some(mut tx) = self.begin_guarded(resolve).await? else {
            return Ok(false);
        };
        let row = sqlx::query(
            "SELECT order_id, user_id, amount_minor, currency_code FROM payments \
             WHERE payment_id = $1",
        )
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let event = events::charge_resolved(
            id,
            events::Owner {
                order_id: row.try_get("order_id")?,
                user_id: row.try_get("user_id")?,
            },
            resolution.state,
            &resolution.reason,
            events::Amount {
                minor: row.try_get("amount_minor")?,
                currency: row.try_get("currency_code")?,
            },
        );
        // The transition's history row and the event: one round trip.
        let appended = self
            .outbox
            .execute_and_append(
                &mut tx,
                INSERT_TRANSITION,
                TRANSITION_PARAMETERS,
                |insert| {
                    bind_transition(insert, id, resolution.state, resolution.reason.clone(), now)
                },
                event.as_slice(),
            )
            .await?
            .appended;
        tx.commit().await?;
        self.outbox.committed(appended);
        Ok(true)
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
        let shape = filter.shape();
        let page = sqlx::query(LIST_PAGE[shape])
            .bind(after.clone())
            .bind(i64::from(limit));
        let rows = filter.bind(page).fetch_all(self.db.pool()).await?;
        let mut payments = rows
            .iter()
            .map(payment_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(last) = payments.last().map(|p| p.id.to_string()) else {
            return Ok(payments);
        };

        let transitions = sqlx::query(LIST_TRANSITIONS[shape])
            .bind(after.clone())
            .bind(last.clone());
        let transitions = filter.bind(transitions).fetch_all(self.db.pool()).await?;
        let refunds = sqlx::query(LIST_REFUNDS[shape]).bind(after).bind(last);
        let refunds = filter.bind(refunds).fetch_all(self.db.pool()).await?;

        let index: HashMap<PaymentId, usize> = payments
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
}

/// A row of a payment's history: `$1` payment id, `$2` state, `$3` note,
/// `$4` time ([`bind_transition`] binds them).
const INSERT_TRANSITION: &str = "INSERT INTO payment_transitions (payment_id, state, note, created_at) \
     VALUES ($1, $2, $3, $4)";

/// The parameters of [`INSERT_TRANSITION`].
const TRANSITION_PARAMETERS: usize = 4;

/// `query` (starting with [`INSERT_TRANSITION`]) with one history row's
/// values bound.
fn bind_transition(
    query: AnyQuery,
    payment_id: PaymentId,
    state: PaymentState,
    note: String,
    now: i64,
) -> AnyQuery {
    query
        .bind(payment_id.to_string())
        .bind(state.as_str())
        .bind(note)
        .bind(now)
}

/// Appends an entry to a payment's history, in the transaction of the change
/// it records.
pub(super) async fn append_transition(
    conn: &mut AnyConnection,
    payment_id: PaymentId,
    state: PaymentState,
    note: String,
    now: i64,
) -> Result<(), sqlx::Error> {
    bind_transition(sqlx::query(INSERT_TRANSITION), payment_id, state, note, now)
        .execute(conn)
        .await?;
    Ok(())
}

fn payment_from_row(row: &AnyRow) -> Result<Payment, PaymentError> {
    Ok(Payment {
        id: parse_stored(PaymentId::parse, row.try_get("payment_id")?)?,
        order_id: parse_stored(OrderId::parse, row.try_get("order_id")?)?,
        user_id: parse_stored(UserId::parse, row.try_get("user_id")?)?,
        amount: money(row.try_get("amount_minor")?, row.try_get("currency_code")?)?,
        refunded_minor: row.try_get("refunded_minor")?,
        refund_reserved_minor: row.try_get("refund_reserved_minor")?,
        state: stored_payment_state(row.try_get("state")?)?,
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
    Ok((
        parse_stored(PaymentId::parse, row.try_get("payment_id")?)?,
        Transition {
            state: stored_payment_state(row.try_get("state")?)?,
            at: row.try_get("created_at")?,
            note: row.try_get("note")?,
        },
    ))
}

/// Parses a payment state read back from the database.
pub(super) fn stored_payment_state(stored: String) -> Result<PaymentState, PaymentError> {
    parse_stored(|s| PaymentState::parse(s).ok_or("unknown state"), stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sqlx binds NULL for a placeholder left unbound, so a statement array
    /// out of [`PaymentFilter::shape`] order would quietly list the wrong
    /// payments: every filter must pick statements that filter on exactly
    /// its columns and number exactly the values it binds.
    #[test]
    fn each_filter_picks_statements_matching_its_binds() {
        for order_id in [None, Some(OrderId::new())] {
            for user_id in [None, Some(UserId::new())] {
                let filter = PaymentFilter { order_id, user_id };
                let bound = 2 + usize::from(order_id.is_some()) + usize::from(user_id.is_some());
                for sql in [
                    LIST_PAGE[filter.shape()],
                    LIST_TRANSITIONS[filter.shape()],
                    LIST_REFUNDS[filter.shape()],
                ] {
                    assert_eq!(sql.contains("p.order_id = $3"), order_id.is_some(), "{sql}");
                    assert_eq!(sql.contains("p.user_id = $"), user_id.is_some(), "{sql}");
                    assert!(sql.contains(&format!("${bound}")), "{sql}");
                    assert!(!sql.contains(&format!("${}", bound + 1)), "{sql}");
                }
            }
        }
    }
}
