//! Duration strings in resource specs (`checkInterval: 30s`, `timeout: 1m30s`).
//!
//! The grammar is the subset of Go's `time.ParseDuration` that the CRD schema admits
//! (`^([0-9]+(ms|s|m|h))+$`), so that the API server's CEL `duration()` and this parser agree on
//! every value a user can store.

use std::time::Duration;

/// The regular expression the CRD schema puts on duration fields.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty input.
    #[error("empty duration; write it like 30s, 5m or 1m30s")]
    Empty,
    /// A part without digits or with an unknown unit.
    #[error("invalid duration {0:?}; write it like 30s, 5m or 1m30s (units: ms, s, m, h)")]
    Invalid(String),
    /// Larger than this parser keeps.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses `30s`, `500ms`, `1m30s`, `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(text.to_string());
    let overflow = || DurationError::Overflow(text.to_string());
    let bytes = text.as_bytes();
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(invalid());
        }
        let number: u64 = text[start..i].parse().map_err(|_| overflow())?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor_ms: u64 = match &text[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(invalid()),
        };
        let part = number.checked_mul(factor_ms).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(part).ok_or_else(overflow)?;
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(
            parse_duration("1h1m1s1ms"),
            Ok(Duration::from_millis(3_661_001))
        );
    }

    #[test]
    fn refuses_what_the_crd_pattern_refuses() {
        for bad in ["", "30", "s", "1.5s", "-1s", "1d", "1 s", "1sx", "ms5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        let re_refuses = |s: &str| !s.is_empty() && parse_duration(s).is_err();
        assert!(re_refuses("5x"));
    }

    #[test]
    fn refuses_overflow_without_panicking() {
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("9999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }
}
