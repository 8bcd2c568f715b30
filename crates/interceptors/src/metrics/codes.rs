//! gRPC status codes as go-grpc-prometheus labels them.

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
}
