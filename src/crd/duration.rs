//! The duration strings of the spec, each read the way its consumer reads it:
//!
//! - [`parse_duration`]: the intervals the operator turns into numbers itself
//!   (`5s`, `1h30m`, `300ms`), shape [`DURATION_PATTERN`];
//! - [`parse_prometheus_duration`]: alert `for:` values, which Prometheus reads
//!   (units largest first, each at most once), shape [`PROMETHEUS_DURATION_PATTERN`];
//! - [`parse_go_duration`]: Go's `time.ParseDuration`, which robfig/cron uses for a
//!   CronJob's `@every` schedule.
//!
//! Each refuses anything else with a message a person can act on, and never panics
//! or overflows on input.

use std::time::Duration;

/// The schema pattern every duration field carries: one or more `<digits><unit>` groups.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// The schema pattern of alert `for:` fields: Prometheus' own duration grammar
/// (prometheus/common `model.ParseDuration`, the pattern prometheus-operator's
/// PrometheusRule CRD carries).
pub const PROMETHEUS_DURATION_PATTERN: &str =
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$";

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{value:?} is not a duration: use digits followed by ms, s, m or h, e.g. 5s, 10m, 1h30m")]
    Shape { value: String },
    #[error("{value:?} is too large to be a duration")]
    Overflow { value: String },
    #[error(
        "{value:?} is not a Prometheus duration: units largest first, each at most once (y, w, d, h, m, s, ms), e.g. 1h30m, 5m, 90s"
    )]
    PrometheusShape { value: String },
    #[error("{value:?} is too long for Prometheus: at most about 292 years")]
    PrometheusOverflow { value: String },
}

/// Why Go's `time.ParseDuration` refuses a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GoDurationError {
    #[error("it is empty or not digits followed by a unit (ns, us, ms, s, m, h)")]
    Shape,
    #[error("a number is missing its unit (ns, us, ms, s, m, h)")]
    MissingUnit,
    #[error("a unit is not one of ns, us, µs, ms, s, m, h")]
    UnknownUnit,
    #[error("it is longer than Go's largest duration (about 292 years)")]
    Overflow,
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

/// Parses a Prometheus duration (`model.ParseDuration`) into milliseconds: `0`, or
/// `<n>y<n>w<n>d<n>h<n>m<n>s<n>ms` with each part optional but in this order, and the
/// total within an i64 of nanoseconds (Prometheus refuses more).
pub fn parse_prometheus_duration(value: &str) -> Result<u64, DurationError> {
    let shape = || DurationError::PrometheusShape { value: value.to_string() };
    let overflow = || DurationError::PrometheusOverflow { value: value.to_string() };
    if value == "0" {
        return Ok(0);
    }
    if value.is_empty() {
        return Err(shape());
    }
    // Units largest first, as ms; `ms` is matched before `m`.
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut rest = value;
    let mut next_unit = 0;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(shape());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| overflow())?;
        rest = &rest[digits..];
        let unit = if rest.starts_with("ms") { "ms" } else { rest.get(..1).unwrap_or_default() };
        let position = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(shape)?;
        if position < next_unit {
            return Err(shape());
        }
        next_unit = position + 1;
        rest = &rest[unit.len()..];
        let part = number.checked_mul(UNITS[position].1).ok_or_else(overflow)?;
        total = total.checked_add(part).ok_or_else(overflow)?;
    }
    // Prometheus keeps durations as nanoseconds in an i64.
    if total > i64::MAX as u64 / 1_000_000 {
        return Err(overflow());
    }
    Ok(total)
}

/// Go's `time.ParseDuration`, in nanoseconds: an optional sign, then one or more
/// `<number><unit>` parts where the number may have a fraction (`1.5h`, `.5m`), or
/// `0` alone.
pub fn parse_go_duration(text: &str) -> Result<i64, GoDurationError> {
    const LIMIT: u64 = 1 << 63;
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(GoDurationError::Shape);
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        if !rest.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(GoDurationError::Shape);
        }
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut whole: u64 = 0;
        for digit in rest[..int_len].bytes() {
            if whole > LIMIT / 10 {
                return Err(GoDurationError::Overflow);
            }
            whole = whole * 10 + u64::from(digit - b'0');
            if whole > LIMIT {
                return Err(GoDurationError::Overflow);
            }
        }
        rest = &rest[int_len..];
        let (mut fraction, mut scale, mut fraction_len) = (0u64, 1f64, 0);
        if let Some(after_dot) = rest.strip_prefix('.') {
            rest = after_dot;
            fraction_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflowed = false;
            for digit in rest[..fraction_len].bytes() {
                if overflowed || fraction > i64::MAX as u64 / 10 {
                    overflowed = true;
                    continue;
                }
                let next = fraction * 10 + u64::from(digit - b'0');
                if next > LIMIT {
                    overflowed = true;
                    continue;
                }
                fraction = next;
                scale *= 10.0;
            }
            rest = &rest[fraction_len..];
        }
        if int_len == 0 && fraction_len == 0 {
            return Err(GoDurationError::Shape);
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(GoDurationError::MissingUnit);
        }
        let unit: u64 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(GoDurationError::UnknownUnit),
        };
        rest = &rest[unit_len..];
        if whole > LIMIT / unit {
            return Err(GoDurationError::Overflow);
        }
        let mut part = whole * unit;
        if fraction > 0 {
            // As Go does: the fraction in floating point, truncated.
            part = part.saturating_add((fraction as f64 * (unit as f64 / scale)) as u64);
            if part > LIMIT {
                return Err(GoDurationError::Overflow);
            }
        }
        total = total.checked_add(part).filter(|t| *t <= LIMIT).ok_or(GoDurationError::Overflow)?;
    }
    if negative {
        return Ok(0i64.checked_sub_unsigned(total).unwrap_or(i64::MIN));
    }
    i64::try_from(total).map_err(|_| GoDurationError::Overflow)
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
    fn prometheus_durations_in_prometheus_order() {
        assert_eq!(parse_prometheus_duration("5m"), Ok(300_000));
        assert_eq!(parse_prometheus_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_prometheus_duration("1d2h3m4s5ms"), Ok(93_784_005));
        assert_eq!(parse_prometheus_duration("0"), Ok(0));
        assert_eq!(parse_prometheus_duration("0s"), Ok(0));
        for bad in ["", "30s5m", "5m5m", "1m1h", "5", "1.5h", "5M", "-5m", "ms5", "5ms1s"] {
            assert!(matches!(parse_prometheus_duration(bad), Err(DurationError::PrometheusShape { .. })), "{bad}");
        }
        assert!(matches!(parse_prometheus_duration("300y"), Err(DurationError::PrometheusOverflow { .. })));
        assert!(parse_prometheus_duration("292y").is_ok());
        let pattern = regex::Regex::new(PROMETHEUS_DURATION_PATTERN).unwrap();
        for sample in ["5m", "1h30m", "30s5m", "0", "", "1y2w3d4h5m6s7ms", "5m5m", "10ms", "1.5h"] {
            let parsed = parse_prometheus_duration(sample);
            let overflow = matches!(parsed, Err(DurationError::PrometheusOverflow { .. }));
            assert_eq!(pattern.is_match(sample) && !sample.is_empty(), parsed.is_ok() || overflow, "{sample}");
        }
    }

    #[test]
    fn go_durations_as_go_reads_them() {
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration(".5m"), Ok(30_000_000_000));
        assert_eq!(parse_go_duration("1.s"), Ok(1_000_000_000));
        assert_eq!(parse_go_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_go_duration("-1h"), Ok(-3_600_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("+0"), Ok(0));
        assert_eq!(parse_go_duration("2562047h"), Ok(2_562_047 * 3_600_000_000_000));
        assert_eq!(parse_go_duration("\u{b5}s"), Err(GoDurationError::Shape));
        assert_eq!(parse_go_duration("1\u{b5}s"), Ok(1_000));
        for (bad, why) in [
            ("", GoDurationError::Shape),
            ("1", GoDurationError::MissingUnit),
            ("1d", GoDurationError::UnknownUnit),
            ("1h ", GoDurationError::UnknownUnit),
            (".", GoDurationError::Shape),
            ("h", GoDurationError::Shape),
            ("2562048h", GoDurationError::Overflow),
            ("9223372036854775808ns", GoDurationError::Overflow),
            ("99999999999999999999s", GoDurationError::Overflow),
        ] {
            assert_eq!(parse_go_duration(bad), Err(why), "{bad}");
        }
        assert_eq!(parse_go_duration("-9223372036854775808ns"), Ok(i64::MIN));
    }

    #[test]
    fn schema_pattern_and_parser_agree() {
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        for sample in ["5s", "1h30m", "10ms", "5", "1d", "", "h", "1m1s1ms", "5 s"] {
            assert_eq!(pattern.is_match(sample), parse_duration(sample).is_ok(), "{sample}");
        }
    }
}
