//! Instants as stored (microseconds since the Unix epoch, an `i64` every database
//! stores natively) and as sent (`google.protobuf.Timestamp`), and the one way
//! a `google.protobuf.Duration` or `Timestamp` from a caller is read: checked
//! against the well-known types' own rules *before* any arithmetic, so a
//! non-normalised or out-of-range value is a field violation
//! (INVALID_ARGUMENT), never an overflow (a panic in a debug build, a wrong
//! answer in a release one).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::values::ParseError;

/// The largest `Duration.seconds` the protobuf spec allows (10 000 years).
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

/// The range of `Timestamp.seconds` the protobuf spec allows:
/// 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// A caller's non-negative `google.protobuf.Duration`, checked: nanos within
/// ±999 999 999 with the sign of seconds, seconds within the spec's ±10 000
/// years, and not negative.
pub fn parse_duration(duration: &prost_types::Duration) -> Result<Duration, ParseError> {
    let prost_types::Duration { seconds, nanos } = *duration;
    if !(-999_999_999..=999_999_999).contains(&nanos) {
        return Err(ParseError::new(
            "nanos must be between -999999999 and 999999999 (a normalised Duration)",
        ));
    }
    if (seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0) {
        return Err(ParseError::new(
            "seconds and nanos must have the same sign (a normalised Duration)",
        ));
    }
    if !(-MAX_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(&seconds) {
        return Err(ParseError::new("must be within 10000 years"));
    }
    if seconds < 0 || nanos < 0 {
        return Err(ParseError::new("must not be negative"));
    }
    // Both checked non-negative and in range above.
    Ok(Duration::new(seconds.unsigned_abs(), nanos.unsigned_abs()))
}

/// A caller's `google.protobuf.Timestamp`, checked (nanos within
/// 0..=999 999 999, seconds within years 1 to 9999), as microseconds since
/// the Unix epoch.
pub fn parse_timestamp(timestamp: &prost_types::Timestamp) -> Result<i64, ParseError> {
    let prost_types::Timestamp { seconds, nanos } = *timestamp;
    if !(0..=999_999_999).contains(&nanos) {
        return Err(ParseError::new("nanos must be between 0 and 999999999"));
    }
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&seconds) {
        return Err(ParseError::new(
            "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
        ));
    }
    // In range: |seconds| * 10^6 stays far below i64::MAX.
    Ok(seconds * 1_000_000 + i64::from(nanos / 1000))
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// A stored instant as a protobuf timestamp.
pub fn timestamp_from_micros(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_checked_before_arithmetic() {
        let d = |seconds, nanos| parse_duration(&prost_types::Duration { seconds, nanos });
        assert_eq!(d(1, 500).unwrap(), Duration::new(1, 500));
        assert_eq!(d(0, 0).unwrap(), Duration::ZERO);
        assert!(d(1, 2_000_000_000).is_err(), "not normalised");
        assert!(d(1, -1).is_err(), "mixed signs");
        assert!(d(i64::MIN, 0).is_err());
        assert!(d(i64::MIN, -999_999_999).is_err());
        assert!(d(i64::MAX, 999_999_999).is_err());
        assert!(d(-5, 0).is_err(), "negative");
    }

    #[test]
    fn timestamps_are_checked_before_arithmetic() {
        let t = |seconds, nanos| parse_timestamp(&prost_types::Timestamp { seconds, nanos });
        assert_eq!(t(1, 500_000_000).unwrap(), 1_500_000);
        assert!(t(0, -1).is_err());
        assert!(t(0, 1_000_000_000).is_err());
        assert!(t(i64::MIN, 0).is_err());
        assert!(t(i64::MAX, 0).is_err());
    }

    #[test]
    fn converts_positive_and_negative_instants() {
        let ts = timestamp_from_micros(1_500_000);
        assert_eq!((ts.seconds, ts.nanos), (1, 500_000_000));
        let ts = timestamp_from_micros(-1);
        assert_eq!((ts.seconds, ts.nanos), (-1, 999_999_000));
    }
}
