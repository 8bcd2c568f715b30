//! The `grpc-timeout` header's wire format: at most eight ASCII digits and a
//! unit (`H`ours, `M`inutes, `S`econds, `m`illis, `u`micros, `n`anos), as the
//! gRPC over HTTP/2 protocol defines it.

use std::time::Duration;

/// The header carrying a call's remaining time.
pub const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// The largest value the protocol allows (eight digits).
const MAX_VALUE: u64 = 99_999_999;

/// Parses a `grpc-timeout` value; `None` when it is malformed, which callers
/// treat like an absent header rather than failing the call.
pub fn parse(value: &str) -> Option<Duration> {
    if value.len() < 2 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Encodes `timeout` in the finest unit that fits eight digits, so short
/// remaining times keep their precision and long ones still fit. Coarser units
/// round up, so a downstream never sees a deadline earlier than ours by more
/// than one unit's rounding.
pub fn encode(timeout: Duration) -> String {
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (size, unit) in units {
        let amount = nanos.div_ceil(size);
        if amount <= u128::from(MAX_VALUE) {
            return format!("{amount}{unit}");
        }
    }
    format!("{MAX_VALUE}H")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in ["", "S", "5", "123456789S", "5s", "-5S", "5 S", "1.5S", "éS"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encodes_in_the_finest_unit_that_fits() {
        assert_eq!(encode(Duration::from_nanos(500)), "500n");
        assert_eq!(encode(Duration::from_millis(250)), "250000u");
        assert_eq!(encode(Duration::from_secs(30)), "30000000u");
        assert_eq!(encode(Duration::from_secs(3600)), "3600000m");
        assert_eq!(encode(Duration::from_secs(400_000_000 * 3600)), "99999999H");
    }

    #[test]
    fn round_trips_within_one_unit() {
        for ms in [1, 17, 999, 30_000, 3_600_000] {
            let d = Duration::from_millis(ms);
            let back = parse(&encode(d)).unwrap();
            assert!(
                back >= d && back - d < Duration::from_millis(1),
                "{ms}: {back:?}"
            );
        }
    }
}
