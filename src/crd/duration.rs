//! Go-style duration strings (`5s`, `1h30m`, `300ms`) as they appear in the spec.
//!
//! The CRD schema constrains the shape with [`DURATION_PATTERN`]; this module turns a
//! valid string into a [`std::time::Duration`] and refuses anything else with a message
//! a person can act on. It never panics on input.

use std::time::Duration;

/// The schema pattern every duration field carries: one or more `<digits><unit>` groups.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{value:?} is not a duration: use digits followed by ms, s, m or h, e.g. 5s, 10m, 1h30m")]
    Shape { value: String },
    #[error("{value:?} is too large to be a duration")]
    Overflow { value: String },
}

/// Parses `1h30m`, `5s`, `300ms`. Units may repeat in any order; the parts are summed.
pub fn parse_duration(value: &str) -> Result<Duration, DurationError> {
    let shape = || DurationError::Shape { value: value.to_string() };
    let overflow = || DurationError::Overflow { value: value.to_string() };
    if value.is_empty() {
        return Err(shape());
    }
    let mut total_ms: u64 = 0;
    let mut rest = value;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(shape());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| overflow())?;
        rest = &rest[digits..];
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return Err(shape());
        };
        rest = &rest[unit_len..];
        let part = number.checked_mul(unit_ms).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(part).ok_or_else(overflow)?;
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_intervals() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_millis(5_000));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_millis(3_600_000));
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn refuses_bad_shapes_without_panicking() {
        for bad in ["", "5", "s", "5 s", "1d", "-5s", "5sec", "1.5h", "ms5"] {
            assert!(matches!(parse_duration(bad), Err(DurationError::Shape { .. })), "{bad}");
        }
        assert!(matches!(parse_duration("99999999999999999999h"), Err(DurationError::Overflow { .. })));
    }

    #[test]
    fn schema_pattern_and_parser_agree() {
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        for sample in ["5s", "1h30m", "10ms", "5", "1d", "", "h", "1m1s1ms", "5 s"] {
            assert_eq!(pattern.is_match(sample), parse_duration(sample).is_ok(), "{sample}");
        }
    }
}
