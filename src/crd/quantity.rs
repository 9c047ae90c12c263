//! Kubernetes quantities and Redis memory sizes as numbers, for comparisons the
//! schema cannot make (requests above limits, `maxmemory` above the pod's limit).

/// A Kubernetes quantity (`250m`, `1Gi`, `2`, `1e3`) in base units (cores or bytes).
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0).map(|n| n * factor);
        }
    }
    for (suffix, factor) in [("P", 1e15), ("E", 1e18)] {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0).map(|n| n * factor);
        }
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0)
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

    #[test]
    fn kubernetes_quantities() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1.5G"), Some(1.5e9));
        assert_eq!(parse_quantity("lots"), None);
        assert_eq!(parse_quantity("-1"), None);
    }

    #[test]
    fn redis_sizes() {
        assert_eq!(parse_redis_memory("2gb"), Some(2 << 30));
        assert_eq!(parse_redis_memory("2g"), Some(2_000_000_000));
        assert_eq!(parse_redis_memory("512mb"), Some(512 << 20));
        assert_eq!(parse_redis_memory("1024"), Some(1024));
        assert_eq!(parse_redis_memory("2tb"), None);
    }
}
