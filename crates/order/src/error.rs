//! The order context's errors and the gRPC status each becomes.
//!
//! Business failures of the saga (out of stock, a declined card) are not
//! errors: they leave the order FAILED with a `failure_reason`. These are the
//! failures of a call itself.

use std::collections::HashMap;

use agora_interceptors::api::errors::{self, ERROR_DOMAIN, with_reason};
use agora_interceptors::db;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

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
    /// UNAVAILABLE: the database could not be reached; retrying may help.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// INTERNAL: logged with its cause; the caller sees a generic message.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<sqlx::Error> for OrderError {
    fn from(error: sqlx::Error) -> Self {
        if db::is_transient(&error) {
            OrderError::Unavailable(error)
        } else {
            OrderError::Internal(error.into())
        }
    }
}

impl From<anyhow::Error> for OrderError {
    fn from(error: anyhow::Error) -> Self {
        OrderError::Internal(error)
    }
}

/// FAILED_PRECONDITION with an ErrorInfo and one PreconditionFailure violation.
fn failed_precondition(
    reason: &str,
    subject: String,
    message: String,
    metadata: HashMap<String, String>,
) -> Status {
    let mut details =
        ErrorDetails::with_precondition_failure_violation(reason, subject, message.clone());
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    Status::with_error_details(Code::FailedPrecondition, message, details)
}

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
            OrderError::RequestIdReused => failed_precondition(
                "REQUEST_ID_REUSED",
                "request_id".into(),
                "request_id was already used for an order with different lines; \
                 use a new request_id for a new order"
                    .into(),
                HashMap::new(),
            ),
            OrderError::NotCancellable { order_id, state } => failed_precondition(
                "ORDER_NOT_CANCELLABLE",
                order_id.clone(),
                match state {
                    "PENDING" => format!(
                        "order {order_id} is PENDING: its saga is still running; \
                         cancel it once it is CONFIRMED"
                    ),
                    _ => format!("order {order_id} is {state} and cannot be cancelled"),
                },
                HashMap::from([
                    ("order_id".to_owned(), order_id),
                    ("state".to_owned(), state.to_owned()),
                ]),
            ),
            OrderError::Downstream(name, status) => {
                tracing::warn!(downstream = name, code = ?status.code(), message = status.message(), "downstream unavailable");
                with_reason(
                    Code::Unavailable,
                    "DEPENDENCY_UNAVAILABLE",
                    format!("the {name} service is unavailable; retry later"),
                    [("downstream", name.to_owned())],
                )
            }
            OrderError::Unavailable(error) => errors::unavailable("order database", &error),
            OrderError::Internal(error) => errors::internal("order service", error.as_ref()),
        }
    }
}
