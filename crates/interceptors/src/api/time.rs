//! Instants as stored (microseconds since the Unix epoch, an `i64` every database
//! stores natively) and as sent (`google.protobuf.Timestamp`).

use std::time::{SystemTime, UNIX_EPOCH};

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
    fn converts_positive_and_negative_instants() {
        let ts = timestamp_from_micros(1_500_000);
        assert_eq!((ts.seconds, ts.nanos), (1, 500_000_000));
        let ts = timestamp_from_micros(-1);
        assert_eq!((ts.seconds, ts.nanos), (-1, 999_999_000));
    }
}
