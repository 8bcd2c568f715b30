//! gRPC status codes as go-grpc-prometheus labels them, and where a response
//! says which code it ended with.

use tonic::Code;

/// The `grpc_code` label of each code, indexed by its number, exactly as Go's
/// `codes.Code.String()` renders it so existing dashboards match.
const NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// How many codes there are; handles are kept in arrays of this size.
pub const COUNT: usize = NAMES.len();

/// The position of `code` in [`NAMES`]: its number. tonic's `Code` has exactly
/// the 17 canonical codes (numbers it does not know parse as `Unknown`), so this
/// is always in range.
pub fn index(code: Code) -> usize {
    code as usize
}

/// The `grpc_code` label of `code`.
pub fn name(code: Code) -> &'static str {
    NAMES[index(code)]
}

/// The code in a `grpc-status` header or trailer, if there is one.
pub fn from_headers(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// The code a gRPC client derives from a non-200 HTTP status (gRPC's
/// http-grpc-status-mapping.md); a 200 without any grpc-status is `Unknown`.
pub fn from_http_status(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_go_name() {
        assert_eq!(name(Code::Ok), "OK");
        assert_eq!(name(Code::Cancelled), "Canceled");
        assert_eq!(name(Code::NotFound), "NotFound");
        assert_eq!(name(Code::Unavailable), "Unavailable");
        assert_eq!(name(Code::Unauthenticated), "Unauthenticated");
        for number in 0..COUNT as i32 {
            assert_eq!(index(Code::from_i32(number)), number as usize);
        }
    }

    #[test]
    fn status_is_read_from_headers() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(from_headers(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(from_headers(&headers), Some(Code::NotFound));
        headers.insert("grpc-status", http::HeaderValue::from_static("junk"));
        assert_eq!(from_headers(&headers), Some(Code::Unknown));
    }

    #[test]
    fn http_statuses_map_like_grpc_clients() {
        assert_eq!(
            from_http_status(http::StatusCode::SERVICE_UNAVAILABLE),
            Code::Unavailable
        );
        assert_eq!(
            from_http_status(http::StatusCode::NOT_FOUND),
            Code::Unimplemented
        );
        assert_eq!(
            from_http_status(http::StatusCode::IM_A_TEAPOT),
            Code::Unknown
        );
    }
}
