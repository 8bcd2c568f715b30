//! gRPC statuses as HTTP answers: the status code by the `google.rpc.Code`
//! mapping (`google/rpc/code.proto`), the body the `google.rpc.Status` in
//! JSON with its details (decoded from `grpc-status-details-bin`, each detail
//! an `Any` with its `@type`).

use prost_reflect::{DescriptorPool, DynamicMessage};
use tonic::{Code, Status};

use crate::transcode::{Violation, to_json};

/// The HTTP status `google/rpc/code.proto` gives each gRPC code.
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as H;
    match code {
        Code::Ok => H::OK,
        Code::Cancelled => H::from_u16(499).unwrap_or(H::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => H::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => H::BAD_REQUEST,
        Code::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        Code::NotFound => H::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => H::CONFLICT,
        Code::PermissionDenied => H::FORBIDDEN,
        Code::Unauthenticated => H::UNAUTHORIZED,
        Code::ResourceExhausted => H::TOO_MANY_REQUESTS,
        Code::Unimplemented => H::NOT_IMPLEMENTED,
        Code::Unavailable => H::SERVICE_UNAVAILABLE,
    }
}

/// The `google.rpc.Status` of `status` as JSON: code, message and details.
pub fn status_json(pool: &DescriptorPool, status: &Status) -> Vec<u8> {
    let Some(descriptor) = pool.get_message_by_name("google.rpc.Status") else {
        return fallback(status);
    };
    // The details header holds the whole google.rpc.Status the server sent.
    if !status.details().is_empty()
        && let Ok(message) = DynamicMessage::decode(descriptor.clone(), status.details())
    {
        return to_json(&message);
    }
    let mut message = DynamicMessage::new(descriptor);
    message.set_field_by_name("code", prost_reflect::Value::I32(status.code() as i32));
    message.set_field_by_name(
        "message",
        prost_reflect::Value::String(status.message().to_owned()),
    );
    to_json(&message)
}

fn fallback(status: &Status) -> Vec<u8> {
    serde_json::json!({"code": status.code() as i32, "message": status.message(), "details": []})
        .to_string()
        .into_bytes()
}

/// An INVALID_ARGUMENT status carrying a `google.rpc.BadRequest` with
/// `violations`, as a service would send it.
pub fn bad_request(violations: &[Violation]) -> Status {
    use tonic_types::{ErrorDetails, StatusExt as _};
    let mut details = ErrorDetails::new();
    for (field, description) in violations {
        details.add_bad_request_violation(field.clone(), description.clone());
    }
    let summary = violations
        .iter()
        .map(|(field, description)| format!("{field}: {description}"))
        .collect::<Vec<_>>()
        .join("; ");
    Status::with_error_details(Code::InvalidArgument, summary, details)
}

/// A status with a `google.rpc.RetryInfo` of `after`.
pub fn retry_later(code: Code, message: &str, after: std::time::Duration) -> Status {
    use tonic_types::{ErrorDetails, StatusExt as _};
    Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_as_google_rpc_code_says() {
        use http::StatusCode as H;
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, want) in table {
            assert_eq!(http_status(code), H::from_u16(want).unwrap(), "{code:?}");
        }
    }

    #[test]
    fn the_status_body_carries_its_details_in_json() {
        let pool = crate::descriptor_pool().unwrap();
        let status = bad_request(&[("page_size".into(), "must not be negative".into())]);
        let json: serde_json::Value = serde_json::from_slice(&status_json(&pool, &status)).unwrap();
        assert_eq!(json["code"], 3);
        assert_eq!(
            json["details"][0]["@type"],
            "type.googleapis.com/google.rpc.BadRequest"
        );
        assert_eq!(
            json["details"][0]["fieldViolations"][0]["field"],
            "page_size"
        );
        let plain = status_json(&pool, &Status::aborted("try again"));
        let json: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(json["code"], 10);
        assert_eq!(json["message"], "try again");
    }
}
