//! The notification context's errors and the gRPC status each becomes.

use agora_interceptors::api::errors::{Fault, with_reason, wrong_state};
use tonic::{Code, Status};

/// Everything that can go wrong in the notification service's API.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    /// NOT_FOUND, reason `DEAD_LETTER_NOT_FOUND`.
    #[error("no dead letter for event {0}")]
    DeadLetterNotFound(String),
    /// FAILED_PRECONDITION, reason `REPLAY_FAILED`: the dead letter's
    /// notification failed again; it stays a dead letter.
    #[error("replaying event {event_id} failed: {error}")]
    ReplayFailed {
        /// The event.
        event_id: String,
        /// Why.
        error: String,
    },
    /// PERMISSION_DENIED, reason `PERMISSION_DENIED`.
    #[error("{0}")]
    Forbidden(&'static str),
    /// UNAVAILABLE (the database) or INTERNAL: the service's own failure.
    #[error(transparent)]
    Fault(#[from] Fault),
}

agora_interceptors::fault_conversions!(NotificationError);

impl From<NotificationError> for Status {
    fn from(error: NotificationError) -> Self {
        match error {
            NotificationError::DeadLetterNotFound(id) => with_reason(
                Code::NotFound,
                "DEAD_LETTER_NOT_FOUND",
                format!("no dead letter for event {id}"),
                [("event_id", id)],
            ),
            NotificationError::ReplayFailed { event_id, error } => wrong_state(
                "REPLAY_FAILED",
                event_id.clone(),
                format!("replaying event {event_id} failed again: {error}"),
                [("event_id", event_id)],
            ),
            NotificationError::Forbidden(why) => {
                with_reason(Code::PermissionDenied, "PERMISSION_DENIED", why, [])
            }
            NotificationError::Fault(fault) => fault.into_status("notification"),
        }
    }
}
