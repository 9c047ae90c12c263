//! Kubernetes quantities and Redis memory sizes as numbers, for the comparisons the
//! schema cannot make (requests above limits, `maxmemory` above the pod's limit).
//!
//! [`parse_quantity`] accepts exactly what apimachinery's `resource.ParseQuantity`
//! accepts, scanner quirks included (`.5`, `1.`, `+1`, `1e3`, and even `Ki` or `-`,
//! which it reads as zero), and refuses what it refuses (`1.5e3k`, `1 Gi`, `0x10`).
//! Values are exact: whole billionths (Kubernetes rounds anything smaller up to one),
//! never a float. Binary-suffixed values are capped at 2^63-1 as Kubernetes caps
//! them; a decimal value above that is refused (Kubernetes documents the bound but
//! does not enforce it, and no pod can use such an amount).

/// 2^63-1: the largest quantity Kubernetes means to represent.
const MAX_UNITS: i128 = i64::MAX as i128;
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// A Kubernetes quantity, exactly, in billionths of its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

/// How a quantity was written; Kubernetes keeps it to print the value back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    /// `Ki`, `Mi`, ... `Ei`.
    BinarySi,
    /// No suffix, or `n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`.
    DecimalSi,
    /// `e<n>` / `E<n>`.
    DecimalExponent,
}

/// Why a text is not a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("is not a Kubernetes quantity: a number with an optional suffix, such as 500m, 2, 1.5Gi or 1e3")]
    Format,
    #[error("has a suffix Kubernetes does not know: use one of n u m k M G T P E, Ki Mi Gi Ti Pi Ei, or e<exponent>")]
    Suffix,
    #[error("is larger than the largest quantity Kubernetes allows (2^63-1)")]
    TooLarge,
    #[error("has an exponent outside -64..64, which no resource amount needs")]
    ExponentRange,
}

impl Quantity {
    /// Zero, as an unset quantity compares.
    pub const ZERO: Quantity = Quantity { nanos: 0, format: Format::DecimalSi };

    /// The value in billionths.
    pub fn nanos(self) -> i128 {
        self.nanos
    }

    /// The value in whole units, rounded up (Kubernetes' `Value()`).
    pub fn value_ceil(self) -> i128 {
        self.nanos.div_euclid(NANOS_PER_UNIT) + i128::from(self.nanos.rem_euclid(NANOS_PER_UNIT) != 0)
    }

    /// The value in bytes or cores as a float, for messages and ratios only.
    pub fn approximate(self) -> f64 {
        self.nanos as f64 / 1e9
    }

    pub fn format(self) -> Format {
        self.format
    }

    pub fn is_negative(self) -> bool {
        self.nanos < 0
    }

    /// A whole number of units.
    pub fn is_whole(self) -> bool {
        self.nanos % NANOS_PER_UNIT == 0
    }
}

/// A quantity as the API server decodes one from JSON: surrounding white space is
/// trimmed (`Quantity.UnmarshalJSON`), then [`parse_quantity`].
pub fn parse_quantity_json(text: &str) -> Result<Quantity, QuantityError> {
    parse_quantity(text.trim())
}

/// `resource.ParseQuantity`, exactly.
pub fn parse_quantity(text: &str) -> Result<Quantity, QuantityError> {
    if text.is_empty() {
        return Err(QuantityError::Format);
    }
    if text == "0" {
        return Ok(Quantity::ZERO);
    }
    let scanned = scan(text)?;
    let (base, exponent, format) = interpret(scanned.suffix).ok_or(QuantityError::Suffix)?;
    // Go's own arithmetic on an exponent like -2^31 overflows; nothing needs more.
    if !(-64..=64).contains(&exponent) {
        return Err(QuantityError::ExponentRange);
    }
    let digits = format!("{}{}", scanned.whole, scanned.fraction);
    let digits = digits.trim_start_matches('0');
    // The value is digits * 10^(decimal exponent) * 2^(binary exponent).
    let decimal_exponent = i64::from(if base == 10 { exponent } else { 0 }) - scanned.fraction.len() as i64;
    let binary_exponent = if base == 2 { exponent } else { 0 };
    let mut nanos =
        if digits.is_empty() { 0 } else { nanos_of(digits, decimal_exponent + 9, binary_exponent, format)? };
    if !scanned.positive {
        nanos = -nanos;
    }
    Ok(Quantity { nanos, format })
}

struct Scanned<'a> {
    positive: bool,
    whole: &'a str,
    fraction: &'a str,
    suffix: &'a str,
}

/// apimachinery's `parseQuantityString`: sign, leading zeros, digits, an optional
/// `.` and digits, then suffix letters, an optional sign and digits.
fn scan(text: &str) -> Result<Scanned<'_>, QuantityError> {
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut positive = true;
    match bytes.first() {
        Some(b'-') => {
            positive = false;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    while pos < bytes.len() && bytes[pos] == b'0' {
        pos += 1;
    }
    let zero = Scanned { positive, whole: "", fraction: "", suffix: "" };
    if pos >= bytes.len() {
        return Ok(zero);
    }
    let start = pos;
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let whole = &text[start..pos];
    if pos >= bytes.len() {
        return Ok(Scanned { whole, ..zero });
    }
    let mut fraction = "";
    if bytes[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        fraction = &text[start..pos];
        if pos >= bytes.len() {
            return Ok(Scanned { whole, fraction, ..zero });
        }
    }
    let suffix_start = pos;
    while pos < bytes.len() && b"eEinumkKMGTP".contains(&bytes[pos]) {
        pos += 1;
    }
    if pos < bytes.len() && matches!(bytes[pos], b'-' | b'+') {
        pos += 1;
    }
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < bytes.len() {
        return Err(QuantityError::Format);
    }
    Ok(Scanned { positive, whole, fraction, suffix: &text[suffix_start..] })
}

/// The suffix as (base, exponent, format), as apimachinery's `suffixHandler`.
fn interpret(suffix: &str) -> Option<(u32, i32, Format)> {
    let decimal = match suffix {
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "" => Some(0),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(exponent) = decimal {
        return Some((10, exponent, Format::DecimalSi));
    }
    let binary = match suffix {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(exponent) = binary {
        return Some((2, exponent, Format::BinarySi));
    }
    let rest = suffix.strip_prefix(['e', 'E'])?;
    if rest.is_empty() {
        return None;
    }
    // Go's strconv.ParseInt(…, 10, 64), then a cast to int32, as apimachinery does.
    let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let parsed: i64 = rest.parse().ok()?;
    Some((10, parsed as i32, Format::DecimalExponent))
}

/// `digits * 10^shift * 2^binary` in whole billionths, rounded up; `shift` already
/// includes the 10^9 of billionths. Capped at 2^63-1 units for binary values,
/// refused above it for decimal ones.
fn nanos_of(digits: &str, shift: i64, binary: i32, format: Format) -> Result<i128, QuantityError> {
    let max_nanos = MAX_UNITS * NANOS_PER_UNIT;
    let too_large = || match format {
        Format::BinarySi => Ok(max_nanos),
        _ => Err(QuantityError::TooLarge),
    };
    // Integer digits (before the shifted decimal point) and whether any digit after
    // it is non-zero (then round up).
    let length = digits.len() as i64;
    let integer_len = length + shift;
    if integer_len > 40 {
        return too_large();
    }
    let (integer_digits, rest): (String, &str) = if integer_len <= 0 {
        (String::new(), digits)
    } else if integer_len >= length {
        (format!("{digits}{}", "0".repeat((integer_len - length) as usize)), "")
    } else {
        let split = integer_len as usize;
        (digits[..split].to_string(), &digits[split..])
    };
    let mut nanos: i128 = match integer_digits.parse() {
        Ok(value) => value,
        Err(_) if integer_digits.is_empty() => 0,
        Err(_) => return too_large(),
    };
    if rest.bytes().any(|b| b != b'0') {
        nanos += 1;
    }
    let binary = u32::try_from(binary).unwrap_or(0);
    match 1i128.checked_shl(binary).and_then(|factor| nanos.checked_mul(factor)) {
        Some(value) if value <= max_nanos => Ok(value),
        _ => too_large(),
    }
}

/// A Redis memory size (`2gb`, `512mb`, `100k`) in bytes, with Redis' own units:
/// `k`/`m`/`g` are powers of 1000, `kb`/`mb`/`gb` powers of 1024.
pub fn parse_redis_memory(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let units: [(&str, u64); 7] = [
        ("kb", 1 << 10),
        ("mb", 1 << 20),
        ("gb", 1 << 30),
        ("k", 1_000),
        ("m", 1_000_000),
        ("g", 1_000_000_000),
        ("b", 1),
    ];
    for (suffix, factor) in units {
        if let Some(number) = lower.strip_suffix(suffix) {
            return number.parse::<u64>().ok()?.checked_mul(factor);
        }
    }
    lower.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(text: &str) -> i128 {
        parse_quantity(text).unwrap_or_else(|e| panic!("{text}: {e}")).nanos()
    }

    #[test]
    fn kubernetes_quantities() {
        assert_eq!(nanos("250m"), 250_000_000);
        assert_eq!(nanos("1Gi"), 1_073_741_824 * NANOS_PER_UNIT);
        assert_eq!(nanos("2"), 2 * NANOS_PER_UNIT);
        assert_eq!(nanos("1.5G"), 1_500_000_000 * NANOS_PER_UNIT);
        assert_eq!(nanos("1e3"), 1000 * NANOS_PER_UNIT);
        assert_eq!(nanos("1E-3"), 1_000_000);
        assert_eq!(nanos("-1"), -NANOS_PER_UNIT);
        assert_eq!(nanos("0.1n"), 1, "below a billionth rounds up");
        assert_eq!(nanos("1e-20"), 1);
        assert_eq!(nanos("0.5Ki"), 512 * NANOS_PER_UNIT);
        assert_eq!(parse_quantity("1Gi").unwrap().format(), Format::BinarySi);
        assert_eq!(parse_quantity("1e3").unwrap().format(), Format::DecimalExponent);
    }

    #[test]
    fn the_scanner_quirks_of_apimachinery() {
        for zero in ["Ki", "m", "-", "+", ".", "0.", "000", "0e5", "0Gi"] {
            assert_eq!(nanos(zero), 0, "{zero}");
        }
        assert_eq!(nanos(".5"), 500_000_000);
        assert_eq!(nanos("1."), NANOS_PER_UNIT);
        assert_eq!(nanos("+1"), NANOS_PER_UNIT);
        assert_eq!(nanos("007"), 7 * NANOS_PER_UNIT);
    }

    #[test]
    fn refuses_what_kubernetes_refuses() {
        for (bad, why) in [
            ("", QuantityError::Format),
            (" 1Gi", QuantityError::Format),
            ("1 Gi", QuantityError::Format),
            ("1Gi ", QuantityError::Format),
            ("lots", QuantityError::Format),
            ("0x10", QuantityError::Format),
            ("1.5e3k", QuantityError::Format),
            ("1e", QuantityError::Suffix),
            ("1KiB", QuantityError::Format),
            ("1kb", QuantityError::Format),
            ("1Ki5", QuantityError::Suffix),
            ("1e+", QuantityError::Suffix),
            ("1e99999999999999999999", QuantityError::Suffix),
            ("1.2.3", QuantityError::Format),
            ("inf", QuantityError::Format),
            ("NaN", QuantityError::Format),
        ] {
            assert_eq!(parse_quantity(bad), Err(why), "{bad:?}");
        }
        assert_eq!(parse_quantity_json(" 1Gi ").map(Quantity::nanos), Ok(1_073_741_824 * NANOS_PER_UNIT));
    }

    #[test]
    fn extremes_are_bounded_not_wrapped() {
        assert_eq!(parse_quantity("1e60"), Err(QuantityError::TooLarge));
        assert_eq!(parse_quantity("1e400"), Err(QuantityError::ExponentRange));
        assert_eq!(parse_quantity("9223372036854775808"), Err(QuantityError::TooLarge));
        assert_eq!(nanos("9223372036854775807"), MAX_UNITS * NANOS_PER_UNIT);
        assert_eq!(nanos("100000000Ei"), MAX_UNITS * NANOS_PER_UNIT, "binary values are capped");
        assert_eq!(nanos(&format!("{}Ei", "9".repeat(5000))), MAX_UNITS * NANOS_PER_UNIT);
        assert_eq!(parse_quantity(&"9".repeat(5000)), Err(QuantityError::TooLarge));
        assert_eq!(nanos(&format!("0.{}1", "0".repeat(5000))), 1);
        assert_eq!(parse_quantity("1e-2147483648"), Err(QuantityError::ExponentRange));
        assert_eq!(nanos("1e4294967296"), NANOS_PER_UNIT, "the exponent is cast to int32 as Go does");
        assert_eq!(
            parse_quantity(&format!("{}Ei", "9".repeat(40))).map(Quantity::nanos),
            Ok(MAX_UNITS * NANOS_PER_UNIT)
        );
    }

    #[test]
    fn redis_sizes() {
        assert_eq!(parse_redis_memory("2gb"), Some(2 << 30));
        assert_eq!(parse_redis_memory("2g"), Some(2_000_000_000));
        assert_eq!(parse_redis_memory("512mb"), Some(512 << 20));
        assert_eq!(parse_redis_memory("1024"), Some(1024));
        assert_eq!(parse_redis_memory("2tb"), None);
        assert_eq!(parse_redis_memory("99999999999gb"), None, "overflow is refused");
    }
}
