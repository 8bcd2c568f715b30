//! The `refunds` table, and the reservation each PENDING refund holds on its
//! payment (`refund_reserved_minor`) until the provider answers: reserved
//! when the refund is recorded, turned into refunded money when it succeeds,
//! released when it fails.

use agora_interceptors::db;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::payments::{append_transition, stored_payment_state};
use super::{PaymentStore, money, parse_stored};
use crate::domain::{PaymentId, Refund, RefundCommand, RefundId, RefundState};
use crate::error::PaymentError;
use crate::events;

/// The refund columns every query reads, as a literal so queries stay
/// `&'static str`.
macro_rules! refund_columns {
    () => {
        "r.refund_id, r.payment_id, r.amount_minor, r.currency_code, r.reason, r.state, \
         r.failure_reason, r.provider_reference, r.idempotency_key, r.request_fingerprint, \
         r.attempts, r.lease_until, r.created_at, r.updated_at"
    };
}
pub(super) use refund_columns;

/// `SELECT`s refund rows by the condition `$where` on `r`.
macro_rules! select_refunds {
    ($where:literal) => {
        concat!(
            "SELECT ",
            refund_columns!(),
            " FROM refunds r WHERE ",
            $where
        )
    };
}
pub(super) use select_refunds;

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

/// How a refund attempt ended at the provider, as it is recorded.
#[derive(Clone, Debug)]
pub enum RefundResolution {
    /// The provider returned the money.
    Succeeded {
        /// The provider's id for the refund.
        provider_reference: String,
    },
    /// The provider refused; nothing was returned.
    Failed {
        /// The provider's reason code.
        reason: String,
    },
}

impl PaymentStore {
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
        let reserve = sqlx::query(
            "UPDATE payments SET refund_reserved_minor = refund_reserved_minor + $2, updated_at = $3 \
             WHERE payment_id = $1 AND state IN ('CAPTURED', 'PARTIALLY_REFUNDED') \
               AND currency_code = $4 \
               AND refunded_minor + refund_reserved_minor + $2 <= amount_minor",
        )
        .bind(command.payment_id.to_string())
        .bind(command.amount.amount.get())
        .bind(now)
        .bind(command.amount.currency.to_string());
        let Some(mut tx) = self
            .begin_guarded(reserve)
            .await
            .map_err(InsertRefundError::Db)?
        else {
            return Err(InsertRefundError::NotReservable);
        };
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
        tx.commit()
            .await
            .map_err(|e| InsertRefundError::Db(e.into()))?;
        Ok(())
    }

    /// The refund recorded under a Refund idempotency key.
    pub async fn find_refund_by_key(&self, key: &str) -> Result<Option<Refund>, PaymentError> {
        let select = select_refunds!("r.idempotency_key = $1");
        self.find_one(select, key, refund_from_row).await
    }

    /// A refund by id.
    pub async fn get_refund(&self, id: RefundId) -> Result<Option<Refund>, PaymentError> {
        let select = select_refunds!("r.refund_id = $1");
        self.find_one(select, id, refund_from_row).await
    }

    /// Records the provider's final answer to `refund`, made under lease
    /// `fence`. Succeeded: the refund SUCCEEDED, its reservation turned into
    /// refunded money, the payment PARTIALLY_REFUNDED or (when nothing
    /// remains) REFUNDED, and a transition noting the refund. Failed: the
    /// refund FAILED and its reservation released. False when the lease was
    /// lost (another driver records the same answer).
    pub async fn resolve_refund(
        &self,
        refund: &Refund,
        fence: i64,
        resolution: &RefundResolution,
        now: i64,
    ) -> Result<bool, PaymentError> {
        let (state, provider_reference, failure_reason) = match resolution {
            RefundResolution::Succeeded { provider_reference } => {
                (RefundState::Succeeded, provider_reference.as_str(), "")
            }
            RefundResolution::Failed { reason } => (RefundState::Failed, "", reason.as_str()),
        };
        let record = sqlx::query(
            "UPDATE refunds SET state = $3, provider_reference = $4, failure_reason = $5, \
               lease_until = 0, updated_at = $6 \
             WHERE refund_id = $1 AND state = 'PENDING' AND attempts = $2",
        )
        .bind(refund.id.to_string())
        .bind(fence)
        .bind(state.as_str())
        .bind(provider_reference.to_owned())
        .bind(failure_reason.to_owned())
        .bind(now);
        let Some(mut tx) = self.begin_guarded(record).await? else {
            return Ok(false);
        };
        let mut appended = 0;
        match resolution {
            RefundResolution::Succeeded { .. } => {
                let row = sqlx::query(
                    "UPDATE payments SET refunded_minor = refunded_minor + $2, \
                       refund_reserved_minor = refund_reserved_minor - $2, \
                       state = CASE WHEN refunded_minor + $2 = amount_minor \
                                    THEN 'REFUNDED' ELSE 'PARTIALLY_REFUNDED' END, \
                       updated_at = $3 \
                     WHERE payment_id = $1 RETURNING state, order_id, user_id",
                )
                .bind(refund.payment_id.to_string())
                .bind(refund.amount.amount.get())
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let state = stored_payment_state(row.try_get("state")?)?;
                let note = format!("refund {}", refund.id);
                append_transition(&mut tx, refund.payment_id, state, note, now).await?;
                let event = events::refunded(
                    refund.payment_id,
                    events::Owner {
                        order_id: row.try_get("order_id")?,
                        user_id: row.try_get("user_id")?,
                    },
                    refund.id,
                    events::Amount {
                        minor: refund.amount.amount.get(),
                        currency: refund.amount.currency.to_string(),
                    },
                );
                appended = self.outbox.append(&mut tx, &[event]).await?;
            }
            RefundResolution::Failed { .. } => {
                sqlx::query(
                    "UPDATE payments SET refund_reserved_minor = refund_reserved_minor - $2, \
                       updated_at = $3 WHERE payment_id = $1",
                )
                .bind(refund.payment_id.to_string())
                .bind(refund.amount.amount.get())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        self.outbox.committed(appended);
        Ok(true)
    }
}

/// Decodes a row read with [`refund_columns!`].
pub(super) fn refund_from_row(row: &AnyRow) -> Result<Refund, PaymentError> {
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
