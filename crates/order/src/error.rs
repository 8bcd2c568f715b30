//! The order context's errors and the gRPC status each becomes.
//!
//! Business failures of the saga (out of stock, a declined card) are not
//! errors: they leave the order FAILED with a `failure_reason`. These are the
//! failures of a call itself.

use agora_interceptors::api::errors::{Fault, with_reason, wrong_state};
use tonic::{Code, Status};

/// Everything that can make an order call fail.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// NOT_FOUND, reason `ORDER_NOT_FOUND`.
    #[error("order {0} not found")]
    NotFound(String),
    /// PERMISSION_DENIED, reason `PERMISSION_DENIED`: e.g. a customer asking
    /// for another customer's order (the order's existence is not hidden:
    /// order ids are unguessable UUIDs).
    #[error("{0}")]
    Forbidden(&'static str),
    /// PERMISSION_DENIED, reason `ACCOUNT_NOT_FOUND`: the token is valid but
    /// the user service no longer knows the account (it was deleted).
    #[error("the caller's account does not exist")]
    AccountNotFound,
    /// FAILED_PRECONDITION, reason `REQUEST_ID_REUSED`: a PlaceOrder repeat
    /// (same request_id) asking for different lines.
    #[error("request_id was already used for an order with different lines")]
    RequestIdReused,
    /// FAILED_PRECONDITION, reason `ORDER_NOT_CANCELLABLE`: PENDING (its saga
    /// is running) or FAILED orders cannot be cancelled.
    #[error("order {order_id} is {state} and cannot be cancelled")]
    NotCancellable {
        /// The order.
        order_id: String,
        /// Its state, upper-case.
        state: &'static str,
    },
    /// UNAVAILABLE, reason `DEPENDENCY_UNAVAILABLE`: a downstream service
    /// needed to answer (the user service) could not be reached.
    #[error("{0} unavailable")]
    Downstream(&'static str, #[source] Status),
    /// UNAVAILABLE (the database) or INTERNAL: the service's own failure.
    #[error(transparent)]
    Fault(#[from] Fault),
}

agora_interceptors::fault_conversions!(OrderError);

impl From<OrderError> for Status {
    fn from(error: OrderError) -> Self {
        match error {
            OrderError::NotFound(id) => with_reason(
                Code::NotFound,
                "ORDER_NOT_FOUND",
                format!("order {id} not found"),
                [("order_id", id)],
            ),
            OrderError::Forbidden(why) => {
                with_reason(Code::PermissionDenied, "PERMISSION_DENIED", why, [])
            }
            OrderError::AccountNotFound => with_reason(
                Code::PermissionDenied,
                "ACCOUNT_NOT_FOUND",
                "the account this token was issued for no longer exists",
                [],
            ),
            OrderError::RequestIdReused => {
                let message = "request_id was already used for an order with different lines; \
                               use a new request_id for a new order";
                wrong_state("REQUEST_ID_REUSED", "request_id", message, [])
            }
            OrderError::NotCancellable { order_id, state } => {
                let message = match state {
                    "PENDING" => format!(
                        "order {order_id} is PENDING: its saga is still running; \
                         cancel it once it is CONFIRMED"
                    ),
                    _ => format!("order {order_id} is {state} and cannot be cancelled"),
                };
                wrong_state(
                    "ORDER_NOT_CANCELLABLE",
                    &order_id,
                    message,
                    [("order_id", order_id.clone()), ("state", state.to_owned())],
                )
            }
            OrderError::Downstream(name, status) => {
                tracing::warn!(downstream = name, code = ?status.code(), message = status.message(), "downstream unavailable");
                with_reason(
                    Code::Unavailable,
                    "DEPENDENCY_UNAVAILABLE",
                    format!("the {name} service is unavailable; retry later"),
                    [("downstream", name.to_owned())],
                )
            }
            OrderError::Fault(fault) => fault.into_status("order"),
        }
    }
}
