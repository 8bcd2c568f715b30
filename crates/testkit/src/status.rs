//! What a test reads off a refused call: the google.rpc details every Agora
//! error carries (BadRequest field violations, ErrorInfo reason and
//! metadata, PreconditionFailure subjects).

use tonic::Status;
use tonic_types::StatusExt;

/// The field paths of the status's BadRequest violations.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The ErrorInfo reason, or "" when there is none.
pub fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// One ErrorInfo metadata value, or "".
pub fn metadata(status: &Status, key: &str) -> String {
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get(key).cloned())
        .unwrap_or_default()
}

/// The (type, subject, description) of every PreconditionFailure
/// violation.
pub fn precondition_violations(status: &Status) -> Vec<(String, String, String)> {
    status
        .get_details_precondition_failure()
        .map(|failure| {
            failure
                .violations
                .into_iter()
                .map(|v| (v.r#type, v.subject, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts `status` is INVALID_ARGUMENT naming exactly `fields` (in any
/// order) as its BadRequest violations.
#[track_caller]
pub fn assert_invalid(status: &Status, fields: &[&str]) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let mut got = violated_fields(status);
    got.sort();
    let mut want: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    want.sort();
    assert_eq!(got, want, "{status:?}");
}

/// Asserts `status` has `code` and ErrorInfo `reason`.
#[track_caller]
pub fn assert_reason(status: &Status, code: tonic::Code, want: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(status), want, "{status:?}");
}
