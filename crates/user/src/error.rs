//! The user context's errors and the gRPC status each becomes.

use agora_interceptors::api::errors::{Fault, with_reason};
use tonic::{Code, Status};

/// Everything that can go wrong in the user service.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// NOT_FOUND, reason `USER_NOT_FOUND`.
    #[error("user {0} not found")]
    NotFound(String),
    /// ALREADY_EXISTS, reason `EMAIL_TAKEN`: another account has this email
    /// (compared case-insensitively).
    #[error("an account with this email already exists")]
    EmailTaken,
    /// UNAUTHENTICATED, reason `INVALID_CREDENTIALS`: the same for an unknown
    /// email and a wrong password, so accounts cannot be discovered.
    #[error("email or password is wrong")]
    InvalidCredentials,
    /// PERMISSION_DENIED, reason `ACCOUNT_DISABLED`: the right password for an
    /// account an admin disabled.
    #[error("this account is disabled")]
    AccountDisabled,
    /// PERMISSION_DENIED, reason `PERMISSION_DENIED`.
    #[error("{0}")]
    Forbidden(&'static str),
    /// UNAVAILABLE (the database) or INTERNAL: the service's own failure.
    #[error(transparent)]
    Fault(#[from] Fault),
}

agora_interceptors::fault_conversions!(UserError);

impl From<UserError> for Status {
    fn from(error: UserError) -> Self {
        match error {
            UserError::NotFound(id) => with_reason(
                Code::NotFound,
                "USER_NOT_FOUND",
                format!("user {id} not found"),
                [("user_id", id)],
            ),
            UserError::EmailTaken => with_reason(
                Code::AlreadyExists,
                "EMAIL_TAKEN",
                "an account with this email already exists",
                [],
            ),
            UserError::InvalidCredentials => with_reason(
                Code::Unauthenticated,
                "INVALID_CREDENTIALS",
                "email or password is wrong",
                [],
            ),
            UserError::AccountDisabled => with_reason(
                Code::PermissionDenied,
                "ACCOUNT_DISABLED",
                "this account is disabled; an admin can enable it",
                [],
            ),
            UserError::Forbidden(why) => {
                with_reason(Code::PermissionDenied, "PERMISSION_DENIED", why, [])
            }
            UserError::Fault(fault) => fault.into_status("user"),
        }
    }
}
