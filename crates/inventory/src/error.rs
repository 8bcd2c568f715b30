//! The inventory context's errors and the gRPC status each becomes.

use agora_interceptors::api::errors::{Fault, failed_precondition, violation, with_reason};
use tonic::{Code, Status};

use crate::domain::{OrderId, ReservationState, Sku};

/// One sku a reservation could not get enough of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortage {
    /// The product.
    pub sku: Sku,
    /// Units asked for.
    pub requested: i64,
    /// Units available when the reservation was tried.
    pub available: i64,
}

/// Everything that can go wrong in the inventory service.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// NOT_FOUND, reason `PRODUCT_NOT_FOUND`, metadata `sku` listing every
    /// unknown sku (comma-separated).
    #[error("unknown sku: {}", join(.0))]
    ProductNotFound(Vec<Sku>),
    /// ALREADY_EXISTS, reason `SKU_TAKEN`.
    #[error("a product with sku {0} already exists")]
    SkuTaken(Sku),
    /// FAILED_PRECONDITION, reason `STOCK_BELOW_RESERVED` or
    /// `STOCK_LIMIT_EXCEEDED`, with a PreconditionFailure (type "STOCK").
    #[error("{message}")]
    StockAdjustmentRefused {
        /// The product.
        sku: Sku,
        /// The stable reason.
        reason: &'static str,
        /// What would have happened, for people.
        message: String,
    },
    /// FAILED_PRECONDITION, reason `REQUEST_ID_REUSED`: an AdjustStock
    /// request_id was already used for a different adjustment.
    #[error("request_id was already used for a different adjustment")]
    RequestIdReused,
    /// FAILED_PRECONDITION, reason `INSUFFICIENT_STOCK`, with one
    /// PreconditionFailure violation (type "STOCK", subject the sku) per
    /// short sku.
    #[error("not enough stock")]
    InsufficientStock(Vec<Shortage>),
    /// FAILED_PRECONDITION, reason `CURRENCY_MISMATCH`: the products of one
    /// reservation are priced in different currencies.
    #[error("the products are priced in more than one currency")]
    CurrencyMismatch,
    /// FAILED_PRECONDITION, reason `RESERVATION_MISMATCH`: the order already
    /// has a reservation with other lines.
    #[error("order {0} already has a reservation with different lines")]
    ReservationMismatch(OrderId),
    /// FAILED_PRECONDITION, reason `RESERVATION_RELEASED` or
    /// `RESERVATION_EXPIRED`: the reservation can no longer be committed.
    #[error(
        "the reservation of order {order_id} is {} and cannot be committed",
        .state.as_str().to_lowercase()
    )]
    NotCommittable {
        /// The order.
        order_id: OrderId,
        /// RELEASED or EXPIRED.
        state: ReservationState,
    },
    /// NOT_FOUND, reason `RESERVATION_NOT_FOUND`.
    #[error("order {0} has no reservation")]
    ReservationNotFound(OrderId),
    /// UNAVAILABLE (the database), ABORTED (colliding transactions, still
    /// so after a few retries; nothing changed) or INTERNAL.
    #[error(transparent)]
    Fault(#[from] Fault),
}

agora_interceptors::fault_conversions!(InventoryError);

fn join(skus: &[Sku]) -> String {
    skus.iter().map(Sku::as_str).collect::<Vec<_>>().join(", ")
}

impl InventoryError {
    /// Whether running the whole operation again may succeed: collisions and
    /// dropped connections. Only idempotent operations are retried, so a
    /// repeat after an ambiguous commit is harmless.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(
            self,
            InventoryError::Fault(Fault::Conflict(_) | Fault::Unavailable(sqlx::Error::Io(_)))
        )
    }
}

impl From<InventoryError> for Status {
    fn from(error: InventoryError) -> Self {
        let message = error.to_string();
        match error {
            InventoryError::ProductNotFound(skus) => with_reason(
                Code::NotFound,
                "PRODUCT_NOT_FOUND",
                message,
                [(
                    "sku",
                    skus.iter().map(Sku::as_str).collect::<Vec<_>>().join(","),
                )],
            ),
            InventoryError::SkuTaken(sku) => with_reason(
                Code::AlreadyExists,
                "SKU_TAKEN",
                message,
                [("sku", sku.to_string())],
            ),
            InventoryError::StockAdjustmentRefused {
                sku,
                reason,
                message,
            } => failed_precondition(
                reason,
                message.clone(),
                vec![violation("STOCK", sku.as_str(), message)],
                [],
            ),
            InventoryError::RequestIdReused => {
                with_reason(Code::FailedPrecondition, "REQUEST_ID_REUSED", message, [])
            }
            InventoryError::InsufficientStock(shortages) => {
                let violations = shortages
                    .iter()
                    .map(|short| {
                        violation(
                            "STOCK",
                            short.sku.as_str(),
                            format!(
                                "{} units requested, {} available",
                                short.requested, short.available
                            ),
                        )
                    })
                    .collect();
                failed_precondition(
                    "INSUFFICIENT_STOCK",
                    format!(
                        "not enough stock for {}",
                        join(&shortages.into_iter().map(|s| s.sku).collect::<Vec<_>>())
                    ),
                    violations,
                    [],
                )
            }
            InventoryError::CurrencyMismatch => {
                with_reason(Code::FailedPrecondition, "CURRENCY_MISMATCH", message, [])
            }
            InventoryError::ReservationMismatch(order_id) => with_reason(
                Code::FailedPrecondition,
                "RESERVATION_MISMATCH",
                message,
                [("order_id", order_id.to_string())],
            ),
            InventoryError::NotCommittable { order_id, state } => with_reason(
                Code::FailedPrecondition,
                if state == ReservationState::Expired {
                    "RESERVATION_EXPIRED"
                } else {
                    "RESERVATION_RELEASED"
                },
                message,
                [("order_id", order_id.to_string())],
            ),
            InventoryError::ReservationNotFound(order_id) => with_reason(
                Code::NotFound,
                "RESERVATION_NOT_FOUND",
                message,
                [("order_id", order_id.to_string())],
            ),
            InventoryError::Fault(fault) => fault.into_status("inventory"),
        }
    }
}
