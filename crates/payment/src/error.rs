//! The payment context's errors and the gRPC status each becomes.
//!
//! A decline is not an error (Charge answers OK with a DECLINED payment); the
//! errors below are the cases where the call itself did not do what was asked.

use std::time::Duration;

use agora_interceptors::api::errors::{
    Fault, FieldViolations, retry_later, with_reason, wrong_state,
};
use tonic::{Code, Status};

use crate::domain::PaymentState;

/// How soon a caller is told to retry after a transient provider failure.
pub const PROVIDER_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Everything that can go wrong in the payment service.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// NOT_FOUND, reason `PAYMENT_NOT_FOUND`.
    #[error("payment {0} not found")]
    NotFound(String),
    /// FAILED_PRECONDITION, reason `IDEMPOTENCY_KEY_REUSED`: the key was first
    /// used for a different request (order, user, amount, token; or for a
    /// refund, payment, amount, reason).
    #[error("idempotency key already used for a different request")]
    KeyReused {
        /// The key.
        key: String,
    },
    /// FAILED_PRECONDITION, reason `ORDER_ALREADY_PAID`: the order already has
    /// a captured (possibly since refunded) payment.
    #[error("order {order_id} is already paid by payment {payment_id}")]
    OrderAlreadyPaid {
        /// The order.
        order_id: String,
        /// Its successful payment.
        payment_id: String,
    },
    /// FAILED_PRECONDITION, reason `ORDER_CHARGE_PENDING`: another charge of
    /// the order (another key) is PENDING; retry that one with its key.
    #[error("order {order_id} has a pending charge {payment_id}")]
    OrderChargePending {
        /// The order.
        order_id: String,
        /// Its pending payment.
        payment_id: String,
    },
    /// FAILED_PRECONDITION, reason `PAYMENT_NOT_REFUNDABLE`: only CAPTURED and
    /// PARTIALLY_REFUNDED payments take refunds.
    #[error("payment {payment_id} is {state} and cannot be refunded")]
    NotRefundable {
        /// The payment.
        payment_id: String,
        /// Its state.
        state: PaymentState,
    },
    /// FAILED_PRECONDITION, reason `REFUND_EXCEEDS_CAPTURED`: the refund would
    /// take the total refunded (including refunds in flight) past the amount
    /// captured.
    #[error("refund exceeds what remains refundable ({remaining} minor units)")]
    RefundExceedsCaptured {
        /// The payment.
        payment_id: String,
        /// Minor units still refundable.
        remaining: i64,
    },
    /// FAILED_PRECONDITION, reason `REFUND_REJECTED`: the provider refused the
    /// refund; nothing was returned. Repeats of the key answer the same.
    #[error("the provider refused the refund: {reason}")]
    RefundRejected {
        /// The provider's reason code.
        reason: String,
    },
    /// INVALID_ARGUMENT on `amount.currency_code`: a refund must be in the
    /// payment's currency.
    #[error("currency must be {expected}")]
    CurrencyMismatch {
        /// The payment's currency.
        expected: String,
    },
    /// PERMISSION_DENIED, reason `PERMISSION_DENIED`.
    #[error("{0}")]
    Forbidden(&'static str),
    /// UNAVAILABLE, reason `PROVIDER_UNAVAILABLE`, with RetryInfo: the provider
    /// failed transiently. The payment (or refund) stays PENDING; retry with
    /// the same idempotency key.
    #[error("payment provider unavailable")]
    ProviderUnavailable,
    /// UNAVAILABLE, reason `CHARGE_IN_PROGRESS`, with RetryInfo: another call
    /// is still driving this key and it did not finish while we waited.
    #[error("another call with this key is still in progress")]
    InProgress,
    /// UNAVAILABLE (the database) or INTERNAL: the service's own failure.
    #[error(transparent)]
    Fault(#[from] Fault),
}

agora_interceptors::fault_conversions!(PaymentError);

impl From<PaymentError> for Status {
    fn from(error: PaymentError) -> Self {
        let message = error.to_string();
        match error {
            PaymentError::NotFound(id) => with_reason(
                Code::NotFound,
                "PAYMENT_NOT_FOUND",
                message,
                [("payment_id", id)],
            ),
            PaymentError::KeyReused { key } => wrong_state(
                "IDEMPOTENCY_KEY_REUSED",
                format!("idempotency_key:{key}"),
                message,
                [("idempotency_key", key)],
            ),
            PaymentError::OrderAlreadyPaid {
                order_id,
                payment_id,
            } => wrong_state(
                "ORDER_ALREADY_PAID",
                format!("order:{order_id}"),
                message,
                [("order_id", order_id), ("payment_id", payment_id)],
            ),
            PaymentError::OrderChargePending {
                order_id,
                payment_id,
            } => wrong_state(
                "ORDER_CHARGE_PENDING",
                format!("order:{order_id}"),
                message,
                [("order_id", order_id), ("payment_id", payment_id)],
            ),
            PaymentError::NotRefundable { payment_id, state } => wrong_state(
                "PAYMENT_NOT_REFUNDABLE",
                format!("payment:{payment_id}"),
                message,
                [("payment_id", payment_id), ("state", state.to_string())],
            ),
            PaymentError::RefundExceedsCaptured {
                payment_id,
                remaining,
            } => wrong_state(
                "REFUND_EXCEEDS_CAPTURED",
                format!("payment:{payment_id}"),
                message,
                [
                    ("payment_id", payment_id),
                    ("remaining_minor", remaining.to_string()),
                ],
            ),
            PaymentError::RefundRejected { reason } => wrong_state(
                "REFUND_REJECTED",
                "refund",
                message,
                [("provider_reason", reason)],
            ),
            PaymentError::CurrencyMismatch { expected } => FieldViolations::single(
                "amount.currency_code",
                format!("must be the payment's currency, {expected}"),
            ),
            PaymentError::Forbidden(why) => {
                with_reason(Code::PermissionDenied, "PERMISSION_DENIED", why, [])
            }
            PaymentError::ProviderUnavailable => retry_later(
                Code::Unavailable,
                "PROVIDER_UNAVAILABLE",
                "the payment provider did not answer; retry with the same idempotency_key \
                 (it never charges twice)",
                PROVIDER_RETRY_AFTER,
            ),
            PaymentError::InProgress => retry_later(
                Code::Unavailable,
                "CHARGE_IN_PROGRESS",
                "another call with this idempotency_key is in progress; retry with the same key",
                PROVIDER_RETRY_AFTER,
            ),
            PaymentError::Fault(fault) => fault.into_status("payment"),
        }
    }
}
