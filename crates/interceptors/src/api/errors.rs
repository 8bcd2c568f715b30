//! Building `tonic::Status` values that follow the gRPC richer error model.
//!
//! Every caller mistake carries a `google.rpc.ErrorInfo` with a stable `reason`
//! (clients switch on it, never on the message) and, for bad fields, a
//! `google.rpc.BadRequest` listing every violation at once. Internal failures are
//! logged with their whole cause chain and reach the caller only as a generic
//! message, so SQL text, file paths and the like never leak.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `ErrorInfo.domain` of every error Agora raises.
pub const ERROR_DOMAIN: &str = "agora.dev";

/// Collects field violations so a request can be checked as a whole and the
/// caller learns about every bad field in one round trip.
#[derive(Debug, Default)]
pub struct FieldViolations {
    violations: Vec<FieldViolation>,
}

impl FieldViolations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` (a proto field path such as `user.email`) is invalid.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations
            .push(FieldViolation::new(field.into(), description.into()));
    }

    /// Keeps the parsed value, or records the parse error against `field`.
    pub fn check<T, E: Display>(&mut self, field: &str, parsed: Result<T, E>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(error) => {
                self.add(field, error.to_string());
                None
            }
        }
    }

    /// INVALID_ARGUMENT for one bad field.
    pub fn single(field: &str, description: impl Into<String>) -> Status {
        let mut violations = Self::new();
        violations.add(field, description);
        violations.into_status()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// `Ok(())` when nothing was recorded, otherwise INVALID_ARGUMENT with every
    /// violation.
    pub fn into_result(self) -> Result<(), Status> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(self.into_status())
        }
    }

    /// INVALID_ARGUMENT carrying every recorded violation.
    pub fn into_status(self) -> Status {
        let summary = self
            .violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        let mut details = ErrorDetails::with_bad_request(self.violations);
        details.set_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, HashMap::new());
        Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid request: {summary}"),
            details,
        )
    }
}

/// INVALID_ARGUMENT for a single bad field.
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    FieldViolations::single(field, description)
}

/// A status with an `ErrorInfo` whose `reason` is stable and machine-readable
/// (UPPER_SNAKE_CASE), plus optional metadata such as the offending id.
pub fn with_reason(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (&'static str, String)>,
) -> Status {
    let metadata = metadata
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect::<HashMap<_, _>>();
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

/// RESOURCE_EXHAUSTED with a `RetryInfo` telling the caller when to come back.
pub fn resource_exhausted(
    reason: &str,
    message: impl Into<String>,
    retry_after: Duration,
) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(retry_after));
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

/// INTERNAL for an unexpected failure: the cause chain goes to the log, the caller
/// gets a generic message.
pub fn internal(context: &str, error: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!(error = %error_chain(error), "{context}");
    with_reason(
        Code::Internal,
        "INTERNAL",
        "internal error; it has been logged",
        [],
    )
}

/// UNAVAILABLE for a dependency (the database, a downstream) that failed in a way
/// a retry may fix. The cause is logged, not returned.
pub fn unavailable(context: &str, error: &(dyn std::error::Error + 'static)) -> Status {
    tracing::warn!(error = %error_chain(error), "{context}");
    with_reason(
        Code::Unavailable,
        "DEPENDENCY_UNAVAILABLE",
        "a dependency is unavailable; retry later",
        [],
    )
}

/// Renders an error and all its sources on one line, for logs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
