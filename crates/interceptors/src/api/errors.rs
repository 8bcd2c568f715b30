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
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

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

    /// The parsed values, once every field has been checked: `parsed` is the
    /// tuple of what [`Self::check`] returned, e.g. `(id, reason)`. Any
    /// violation makes it INVALID_ARGUMENT with all of them. So the check and
    /// the use of its result cannot drift apart:
    ///
    /// ```text
    /// let id = violations.check("order_id", OrderId::parse(&body.order_id));
    /// let reason = violations.check("reason", CancelReason::parse(&body.reason));
    /// let (id, reason) = violations.finish((id, reason))?;
    /// ```
    pub fn finish<T: Parsed>(self, parsed: T) -> Result<T::Values, Status> {
        self.into_result()?;
        parsed.values().ok_or_else(|| {
            // A check that failed without recording a violation: a bug here,
            // not the caller's mistake.
            internal(
                "request parsing",
                &*anyhow::anyhow!("a field failed to parse without a violation"),
            )
        })
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

/// The results of [`FieldViolations::check`] on every field of a request: a
/// tuple of `Option`s, all `Some` when nothing was refused.
pub trait Parsed {
    /// The tuple of the parsed values.
    type Values;
    /// Every value, or `None` if any field failed.
    fn values(self) -> Option<Self::Values>;
}

impl<A> Parsed for Option<A> {
    type Values = A;
    fn values(self) -> Option<A> {
        self
    }
}

macro_rules! parsed_tuple {
    ($($name:ident),+) => {
        impl<$($name),+> Parsed for ($(Option<$name>,)+) {
            type Values = ($($name,)+);
            #[allow(non_snake_case)]
            fn values(self) -> Option<Self::Values> {
                let ($($name,)+) = self;
                Some(($($name?,)+))
            }
        }
    };
}
parsed_tuple!(A, B);
parsed_tuple!(A, B, C);
parsed_tuple!(A, B, C, D);
parsed_tuple!(A, B, C, D, E);
parsed_tuple!(A, B, C, D, E, F);

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
    retry_later(Code::ResourceExhausted, reason, message, retry_after)
}

/// `code` (UNAVAILABLE, RESOURCE_EXHAUSTED) with an ErrorInfo and a
/// `RetryInfo` telling the caller when a retry may succeed.
pub fn retry_later(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    retry_after: Duration,
) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(retry_after));
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(code, message, details)
}

/// How long the `RetryInfo` of `status` asks the caller to wait before
/// retrying; `None` when it carries none (then a retry is not invited).
pub fn retry_delay(status: &Status) -> Option<Duration> {
    status.get_details_retry_info()?.retry_delay
}

/// FAILED_PRECONDITION: the request is well formed but the system is not in
/// a state that allows it (AIP-193). Carries an ErrorInfo with `reason` and
/// `metadata`, and a PreconditionFailure listing what is in the wrong state
/// (see [`violation`]).
pub fn failed_precondition(
    reason: &str,
    message: impl Into<String>,
    violations: Vec<PreconditionViolation>,
    metadata: impl IntoIterator<Item = (&'static str, String)>,
) -> Status {
    let metadata = metadata
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect::<HashMap<_, _>>();
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    details.set_precondition_failure(violations);
    Status::with_error_details(Code::FailedPrecondition, message, details)
}

/// FAILED_PRECONDITION because one `subject` is in the wrong state: the
/// common case of [`failed_precondition`], whose one violation has the
/// reason as its kind.
pub fn wrong_state(
    reason: &str,
    subject: impl Into<String>,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (&'static str, String)>,
) -> Status {
    let message = message.into();
    let violations = vec![violation(reason, subject, message.clone())];
    failed_precondition(reason, message, violations, metadata)
}

/// One PreconditionFailure violation: what kind of check failed (`kind`,
/// e.g. "STOCK" or the error's reason), on which `subject`, and why.
pub fn violation(
    kind: impl Into<String>,
    subject: impl Into<String>,
    description: impl Into<String>,
) -> PreconditionViolation {
    PreconditionViolation::new(kind, subject, description)
}

/// A failure of the service itself, never of the caller: its database could
/// not be reached (UNAVAILABLE: a retry may help), kept reporting colliding
/// transactions (ABORTED: the call changed nothing, repeat it), or something
/// unexpected happened (INTERNAL). Every context's error enum carries it as its `Fault`
/// variant, so these two are mapped, logged and hidden from callers in one
/// place; [`fault_conversions!`](crate::fault_conversions) lets `?` turn
/// `sqlx::Error` and `anyhow::Error` into the context's enum.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// UNAVAILABLE, reason `DEPENDENCY_UNAVAILABLE`: the database could not be
    /// reached or is overloaded.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// ABORTED, reason `CONFLICT`: concurrent transactions kept colliding
    /// (SQLite busy past its timeout, a PostgreSQL serialization failure or
    /// deadlock); nothing was changed.
    #[error("conflicting concurrent update")]
    Conflict(#[source] sqlx::Error),
    /// INTERNAL: logged with its cause chain; the caller sees a generic
    /// message.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<sqlx::Error> for Fault {
    fn from(error: sqlx::Error) -> Self {
        if crate::db::is_conflict(&error) {
            Fault::Conflict(error)
        } else if crate::db::is_transient(&error) {
            Fault::Unavailable(error)
        } else {
            Fault::Internal(error.into())
        }
    }
}

impl From<anyhow::Error> for Fault {
    fn from(error: anyhow::Error) -> Self {
        Fault::Internal(error)
    }
}

impl Fault {
    /// The status the caller sees; `service` names the context in the log
    /// line (e.g. "order").
    pub fn into_status(self, service: &str) -> Status {
        match self {
            Fault::Unavailable(error) => unavailable(&format!("{service} database"), &error),
            Fault::Conflict(error) => {
                tracing::warn!(error = %error_chain(&error), "{service}: transaction conflict persisted");
                with_reason(
                    Code::Aborted,
                    "CONFLICT",
                    "conflicting concurrent update; nothing was changed, retry",
                    [],
                )
            }
            Fault::Internal(error) => internal(&format!("{service} service"), error.as_ref()),
        }
    }
}

/// Implements `From<sqlx::Error>` and `From<anyhow::Error>` for a context's
/// error enum through its `Fault(`[`Fault`]`)` variant, so `?` works on
/// database calls and `anyhow!` alike.
#[macro_export]
macro_rules! fault_conversions {
    ($error:ty) => {
        impl ::std::convert::From<::sqlx::Error> for $error {
            fn from(error: ::sqlx::Error) -> Self {
                Self::Fault(error.into())
            }
        }

        impl ::std::convert::From<::anyhow::Error> for $error {
            fn from(error: ::anyhow::Error) -> Self {
                Self::Fault(error.into())
            }
        }
    };
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
