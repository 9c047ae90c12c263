//! Backup names: the UTC time the run started, `YYYYMMDDTHHMMSSZ` (what
//! `date -u +%Y%m%dT%H%M%SZ` prints), optionally followed by `-label` (`manual`,
//! `pre-upgrade`) so a person can tell why a backup exists. The time in the name is
//! what retention counts by; a run still being written has the suffix `.partial`.

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::DateTime;
use k8s_openapi::jiff::tz::TimeZone;

/// Suffix of the folder a run writes into until it is finalized.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Longest label after the timestamp.
pub const MAX_LABEL: usize = 40;
/// Length of the timestamp part.
const STAMP_LEN: usize = 16;

/// A parsed backup name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BackupName {
    /// When the run started (UTC, whole seconds).
    pub timestamp: Timestamp,
    /// What follows the timestamp, without the `-`.
    pub label: Option<String>,
}

/// Why a folder name is not a backup name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{name:?} does not start with a UTC timestamp such as 20261123T010000Z")]
    NoTimestamp { name: String },
    #[error("{name:?} starts with {stamp:?}, which is not a valid time")]
    InvalidTime { name: String, stamp: String },
    #[error(
        "{name:?} has an unexpected label after the timestamp: use '-' then at most {MAX_LABEL} lower-case letters, digits and '-'"
    )]
    InvalidLabel { name: String },
}

impl BackupName {
    /// Parses a complete backup's name (no `.partial`).
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let no_timestamp = || NameError::NoTimestamp { name: name.to_string() };
        let stamp = name.get(..STAMP_LEN).ok_or_else(no_timestamp)?;
        let timestamp = parse_stamp(stamp).ok_or_else(|| {
            if stamp_shape(stamp) {
                NameError::InvalidTime { name: name.to_string(), stamp: stamp.to_string() }
            } else {
                no_timestamp()
            }
        })?;
        let rest = &name[STAMP_LEN..];
        let label = match rest.strip_prefix('-') {
            None if rest.is_empty() => None,
            Some(label) if valid_label(label) => Some(label.to_string()),
            _ => return Err(NameError::InvalidLabel { name: name.to_string() }),
        };
        Ok(Self { timestamp, label })
    }

    /// The name as written on disk.
    pub fn render(&self) -> String {
        let stamp = self.timestamp.strftime("%Y%m%dT%H%M%SZ").to_string();
        match &self.label {
            Some(label) => format!("{stamp}-{label}"),
            None => stamp,
        }
    }
}

impl std::fmt::Display for BackupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

/// A fresh name for a run starting at `at`, whole seconds.
pub fn name_at(at: Timestamp, label: Option<&str>) -> BackupName {
    let timestamp = Timestamp::from_second(at.as_second()).unwrap_or(at);
    BackupName { timestamp, label: label.map(str::to_string) }
}

fn stamp_shape(stamp: &str) -> bool {
    let b = stamp.as_bytes();
    b.len() == STAMP_LEN && b[8] == b'T' && b[15] == b'Z' && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

fn parse_stamp(stamp: &str) -> Option<Timestamp> {
    if !stamp_shape(stamp) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| stamp[range].parse::<i16>().ok();
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    let civil = DateTime::new(
        year,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
        0,
    )
    .ok()?;
    civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_date_prints_with_and_without_a_label() {
        let plain = BackupName::parse("20261123T010000Z").unwrap();
        assert_eq!(plain.timestamp.to_string(), "2026-11-23T01:00:00Z");
        assert_eq!(plain.label, None);
        assert_eq!(plain.render(), "20261123T010000Z");
        let labelled = BackupName::parse("20261123T010000Z-pre-upgrade").unwrap();
        assert_eq!(labelled.label.as_deref(), Some("pre-upgrade"));
        assert_eq!(labelled.render(), "20261123T010000Z-pre-upgrade");
    }

    #[test]
    fn refuses_odd_names_and_says_why() {
        for odd in ["", "latest", "lost+found", "20261123T010000", "20261123t010000Z", "2026-11-23T01:00:00Z"] {
            assert!(matches!(BackupName::parse(odd), Err(NameError::NoTimestamp { .. })), "{odd}");
        }
        for bad_time in ["20261323T010000Z", "20260230T010000Z", "20261123T250000Z", "20261123T016000Z"] {
            assert!(matches!(BackupName::parse(bad_time), Err(NameError::InvalidTime { .. })), "{bad_time}");
        }
        for bad_label in [
            "20261123T010000Z.partial",
            "20261123T010000Z-",
            "20261123T010000Z-Manual",
            "20261123T010000Z--x",
            "20261123T010000Zx",
            "20261123T010000Z-a/b",
        ] {
            assert!(matches!(BackupName::parse(bad_label), Err(NameError::InvalidLabel { .. })), "{bad_label}");
        }
        let long = format!("20261123T010000Z-{}", "a".repeat(MAX_LABEL + 1));
        assert!(BackupName::parse(&long).is_err());
    }

    #[test]
    fn leap_days_and_multibyte_text_do_not_confuse_the_parser() {
        assert!(BackupName::parse("20280229T000000Z").is_ok());
        assert!(BackupName::parse("20270229T000000Z").is_err());
        // A multi-byte character across the 16-byte boundary must not panic.
        assert!(BackupName::parse("2026112301000é0Z").is_err());
        assert!(BackupName::parse("20261123T01000Zé").is_err());
    }

    #[test]
    fn name_at_drops_subseconds_and_round_trips() {
        let at: Timestamp = "2026-01-02T03:04:05.999Z".parse().unwrap();
        let name = name_at(at, Some("manual"));
        assert_eq!(name.render(), "20260102T030405Z-manual");
        assert_eq!(BackupName::parse(&name.render()).unwrap(), name);
    }
}
