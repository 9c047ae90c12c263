//! The restore drill's rules, with no I/O: which database it may restore into (never
//! the production one), and the controller's verdict on the last drill: the
//! `BackupVerified` condition and the two numbers the `ReferralBackupUnverified`
//! alert compares, so the condition and the alert agree.
//!
//! The rule: the newest backup a drill restored successfully may be at most
//! `maxUnverifiedAge` old, counted from that backup's own time (its name), not from
//! the drill: a drill that keeps passing on an old backup does not make the newer,
//! unverified ones safe. Before the first successful drill the age counts from the
//! ReferralSystem's creation, so a new system is not flagged at once and one whose
//! drills never pass is. A drill that failed is reported at once (reason
//! `RestoreDrillFailed`), the alert waits for the age rule.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::manifest::valid_database_name;
use super::name::BackupName;
use crate::crd::status::{DrillResult, VerifiedRestoreStatus};

/// `BackupVerified` reasons.
pub const REASON_VERIFIED: &str = "RestoreVerified";
pub const REASON_FIRST_PENDING: &str = "FirstDrillPending";
pub const REASON_OVERDUE: &str = "VerificationOverdue";
pub const REASON_FAILED: &str = "RestoreDrillFailed";
pub const REASON_INVALID_AGE: &str = "InvalidMaxUnverifiedAge";
/// maxUnverifiedAge is not longer than the time between two drills: the alert would
/// fire before every drill, however well the drills go.
pub const REASON_AGE_BELOW_INTERVAL: &str = "MaxUnverifiedAgeBelowDrillInterval";

/// How far ahead the drill's fire times are searched for its longest interval: a year
/// covers every calendar pattern but a leap day's; at most this many fire times.
const INTERVAL_SEARCH_DAYS: i64 = 400;
const INTERVAL_SEARCH_RUNS: usize = 2000;

/// Databases a drill never restores into, whatever the spec says: MongoDB's own.
const RESERVED: [&str; 3] = ["admin", "local", "config"];

/// Why a scratch database was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScratchError {
    #[error(
        "the scratch database {scratch:?} is the production database {production:?} (MongoDB compares names without case): the drill drops its scratch database, so it refuses; set spec.backup.restoreDrill.scratchDatabase to another name"
    )]
    IsProduction { scratch: String, production: String },
    #[error("the scratch database {scratch:?} is one of MongoDB's own (admin, local, config): choose another name")]
    Reserved { scratch: String },
    #[error("the scratch database {scratch:?} is not a MongoDB database name")]
    InvalidName { scratch: String },
}

/// A database the drill may restore into and drop: checked to be another database
/// than the production one. The only way to get one is [`ScratchDatabase::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScratchDatabase(String);

impl ScratchDatabase {
    /// Checks `scratch` against `production`.
    pub fn new(scratch: &str, production: &str) -> Result<ScratchDatabase, ScratchError> {
        if scratch.eq_ignore_ascii_case(production) {
            return Err(ScratchError::IsProduction { scratch: scratch.into(), production: production.into() });
        }
        if RESERVED.iter().any(|r| scratch.eq_ignore_ascii_case(r)) {
            return Err(ScratchError::Reserved { scratch: scratch.into() });
        }
        if !valid_database_name(scratch) {
            return Err(ScratchError::InvalidName { scratch: scratch.into() });
        }
        Ok(ScratchDatabase(scratch.to_string()))
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

/// The scratch database's name when the spec names none: `<production>_drill`, or,
/// when that is too long for MongoDB (63 bytes), `drill_` and a hash of the name.
pub fn default_scratch_database(production: &str) -> String {
    let name = format!("{production}_drill");
    if name.len() <= 63 {
        return name;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(production.as_bytes());
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("drill_{hash}")
}

/// What [`restore_drill_verdict`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct DrillVerdictInput<'a> {
    /// `spec.backup.restoreDrill.maxUnverifiedAge`, as written.
    pub max_unverified_age: &'a str,
    /// `spec.backup.restoreDrill.schedule`.
    pub schedule: &'a str,
    /// `status.backup.lastVerifiedRestore`.
    pub last: Option<&'a VerifiedRestoreStatus>,
    /// When the ReferralSystem was created.
    pub created: Timestamp,
    pub now: Timestamp,
}

/// The verdict, and the numbers the metrics export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillVerdict {
    pub verified: bool,
    /// One of the `REASON_*` constants.
    pub reason: &'static str,
    pub message: String,
    /// The time the age counts from: the newest successfully restored backup's time,
    /// or the creation (`referral_operator_backup_verified_timestamp_seconds`).
    pub since: Timestamp,
    /// The limit in seconds (`referral_operator_backup_max_unverified_age_seconds`);
    /// `None` when it cannot be read (no metric then, the condition says why).
    pub max_age_seconds: Option<i64>,
}

/// Decides `BackupVerified` from the last drill's report.
pub fn restore_drill_verdict(input: DrillVerdictInput<'_>) -> DrillVerdict {
    let verified_backup = input.last.and_then(|l| l.verified_backup.as_deref());
    let verified_at = verified_backup.and_then(|name| BackupName::parse(name).ok()).map(|n| n.timestamp);
    let since = verified_at.unwrap_or(input.created);
    let max_ms = match crate::crd::duration::parse_prometheus_duration(input.max_unverified_age) {
        Ok(ms) if ms > 0 => ms,
        Ok(_) | Err(_) => {
            return DrillVerdict {
                verified: false,
                reason: REASON_INVALID_AGE,
                message: format!(
                    "spec.backup.restoreDrill.maxUnverifiedAge {:?} is not a duration above zero, such as 8d",
                    input.max_unverified_age
                ),
                since,
                max_age_seconds: None,
            };
        }
    };
    let max_seconds = i64::try_from(max_ms / 1000).unwrap_or(i64::MAX);
    let due = since.checked_add(SignedDuration::from_secs(max_seconds)).ok();
    let within = due.is_none_or(|due| input.now <= due);
    // Fixed times only, never an age: a reconcile of an unchanged system writes nothing.
    let due_text = due.map(|d| d.to_string()).unwrap_or_else(|| "a time past the calendar's end".into());
    let limit = input.max_unverified_age;
    let verdict = |verified, reason, message| DrillVerdict {
        verified,
        reason,
        message,
        since,
        max_age_seconds: Some(max_seconds),
    };
    if let Some(interval) = longest_interval(input.schedule, input.now)
        && interval.as_secs() >= max_seconds
    {
        return verdict(
            false,
            REASON_AGE_BELOW_INTERVAL,
            format!(
                "spec.backup.restoreDrill.maxUnverifiedAge {limit} is not longer than the longest time between two drills of schedule {:?} ({}s): ReferralBackupUnverified would fire before every drill. Set maxUnverifiedAge above that interval plus the time from a backup to the drill after it (8d for the weekly default), or drill more often",
                input.schedule,
                interval.as_secs()
            ),
        );
    }
    if let Some(last) = input.last.filter(|l| l.result == DrillResult::Failed) {
        let backup = last.backup.as_deref().unwrap_or("no backup");
        let before = match verified_backup {
            Some(good) => format!("; the newest backup restored successfully is still {good}"),
            None => "; no drill has succeeded yet".into(),
        };
        return verdict(
            false,
            REASON_FAILED,
            format!("the restore drill of {} ({backup}) failed: {}{before}", last.time.0, last.message),
        );
    }
    match (verified_backup, within) {
        (Some(name), true) => verdict(
            true,
            REASON_VERIFIED,
            format!(
                "backup {name} was restored into a scratch database, counted against its manifest and chain-checked; a newer backup must pass a drill before {due_text} (maxUnverifiedAge {limit})"
            ),
        ),
        (Some(name), false) => verdict(
            false,
            REASON_OVERDUE,
            format!(
                "the newest backup restored successfully is {name}, and it is more than maxUnverifiedAge {limit} old since {due_text}: look at the restore drill CronJob (suspended? failing?) and its Jobs"
            ),
        ),
        (None, true) => verdict(
            true,
            REASON_FIRST_PENDING,
            format!("no restore drill has succeeded yet; the first must before {due_text} (maxUnverifiedAge {limit})"),
        ),
        (None, false) => verdict(
            false,
            REASON_OVERDUE,
            format!(
                "no restore drill has succeeded since the system was created, and one was due before {due_text} (maxUnverifiedAge {limit}): look at the restore drill CronJob and its Jobs"
            ),
        ),
    }
}

/// The longest time between two consecutive fire times of `schedule` in the next
/// [`INTERVAL_SEARCH_DAYS`] from `now` (`@every`: its interval); `None` when it cannot
/// be read or fires less than twice in that time (the schedule's own checks say so).
fn longest_interval(schedule: &str, now: Timestamp) -> Option<SignedDuration> {
    let parsed = super::schedule::CronSchedule::parse(schedule).ok()?;
    if let super::schedule::CronSchedule::Every(every) = parsed {
        return SignedDuration::try_from(every).ok();
    }
    let end = now.checked_add(SignedDuration::from_hours(24 * INTERVAL_SEARCH_DAYS)).ok()?;
    let mut previous = parsed.next_after(now)?;
    let mut longest: Option<SignedDuration> = None;
    for _ in 0..INTERVAL_SEARCH_RUNS {
        let Some(next) = parsed.next_after(previous).filter(|next| *next <= end) else { break };
        let gap = next.duration_since(previous);
        longest = Some(longest.map_or(gap, |l| l.max(gap)));
        previous = next;
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn drill(result: DrillResult, backup: &str, verified: Option<&str>) -> VerifiedRestoreStatus {
        VerifiedRestoreStatus {
            time: Time(at("2027-01-17T04:10:00Z")),
            backup: Some(backup.into()),
            result,
            message: "neurolov/users.bson.gz: SHA-256 differs from the manifest".into(),
            source: Some("/backups".into()),
            scratch_database: "neurolov_drill".into(),
            documents: 0,
            chains: None,
            verified_backup: verified.map(str::to_string),
        }
    }

    fn input<'a>(last: Option<&'a VerifiedRestoreStatus>, now: &str) -> DrillVerdictInput<'a> {
        DrillVerdictInput {
            max_unverified_age: "8d",
            schedule: "0 4 * * 0",
            last,
            created: at("2027-01-01T00:00:00Z"),
            now: at(now),
        }
    }

    #[test]
    fn the_production_database_is_never_a_scratch_database() {
        assert!(matches!(ScratchDatabase::new("neurolov", "neurolov"), Err(ScratchError::IsProduction { .. })));
        assert!(
            matches!(ScratchDatabase::new("NeuroLov", "neurolov"), Err(ScratchError::IsProduction { .. })),
            "MongoDB refuses two databases differing only in case, so they are the same one"
        );
        assert!(matches!(ScratchDatabase::new("admin", "neurolov"), Err(ScratchError::Reserved { .. })));
        assert!(matches!(ScratchDatabase::new("a.b", "neurolov"), Err(ScratchError::InvalidName { .. })));
        assert_eq!(ScratchDatabase::new("neurolov_drill", "neurolov").unwrap().name(), "neurolov_drill");
        let message = ScratchDatabase::new("neurolov", "neurolov").unwrap_err().to_string();
        assert!(message.contains("spec.backup.restoreDrill.scratchDatabase"), "{message}");
    }

    #[test]
    fn the_default_scratch_name_differs_and_fits() {
        assert_eq!(default_scratch_database("neurolov"), "neurolov_drill");
        let long = "x".repeat(63);
        let name = default_scratch_database(&long);
        assert!(name.len() <= 63 && name != long && ScratchDatabase::new(&name, &long).is_ok(), "{name}");
    }

    #[test]
    fn a_verified_backup_within_the_age_is_verified_and_turns_overdue_after_it() {
        let last = drill(DrillResult::Succeeded, "20270117T010000Z", Some("20270117T010000Z"));
        let fresh = restore_drill_verdict(input(Some(&last), "2027-01-20T00:00:00Z"));
        assert!(fresh.verified, "{fresh:?}");
        assert_eq!(fresh.reason, REASON_VERIFIED);
        assert_eq!(fresh.since, at("2027-01-17T01:00:00Z"), "counted from the backup, not the drill");
        assert_eq!(fresh.max_age_seconds, Some(8 * 86400));
        assert!(fresh.message.contains("2027-01-25T01:00:00Z"), "{}", fresh.message);
        let late = restore_drill_verdict(input(Some(&last), "2027-01-25T01:00:01Z"));
        assert!(!late.verified);
        assert_eq!(late.reason, REASON_OVERDUE);
        let edge = restore_drill_verdict(input(Some(&last), "2027-01-25T01:00:00Z"));
        assert!(edge.verified, "exactly at the limit is still within it");
    }

    #[test]
    fn a_failed_drill_is_reported_at_once_with_its_message_and_the_last_good_backup() {
        let last = drill(DrillResult::Failed, "20270117T010000Z", Some("20270110T010000Z"));
        let verdict = restore_drill_verdict(input(Some(&last), "2027-01-17T05:00:00Z"));
        assert!(!verdict.verified);
        assert_eq!(verdict.reason, REASON_FAILED);
        assert!(verdict.message.contains("users.bson.gz") && verdict.message.contains("20270110T010000Z"));
        assert_eq!(verdict.since, at("2027-01-10T01:00:00Z"), "the alert counts from the last good one");
    }

    #[test]
    fn before_any_success_the_age_counts_from_the_creation() {
        let pending = restore_drill_verdict(input(None, "2027-01-05T00:00:00Z"));
        assert!(pending.verified);
        assert_eq!(pending.reason, REASON_FIRST_PENDING);
        assert_eq!(pending.since, at("2027-01-01T00:00:00Z"));
        let overdue = restore_drill_verdict(input(None, "2027-01-10T00:00:00Z"));
        assert!(!overdue.verified);
        assert_eq!(overdue.reason, REASON_OVERDUE);
    }

    #[test]
    fn an_age_limit_not_above_the_drill_interval_is_reported_as_such() {
        let last = drill(DrillResult::Succeeded, "20270117T010000Z", Some("20270117T010000Z"));
        let now = "2027-01-17T05:00:00Z";
        for (age, schedule) in [("7d", "0 4 * * 0"), ("36h", "0 4 * * 0"), ("1d", "0 1 * * 1-5"), ("2h", "@every 3h")] {
            let verdict = restore_drill_verdict(DrillVerdictInput {
                max_unverified_age: age,
                schedule,
                ..input(Some(&last), now)
            });
            assert_eq!(verdict.reason, REASON_AGE_BELOW_INTERVAL, "{age} {schedule}: {verdict:?}");
            assert!(!verdict.verified);
            assert!(verdict.message.contains(age) && verdict.message.contains(schedule), "{}", verdict.message);
        }
        // Weekdays only: Friday to Monday is three days, so 2d is too short but 4d is not.
        for (age, schedule) in [("8d", "0 4 * * 0"), ("4d", "0 1 * * 1-5"), ("4h", "@every 3h"), ("400d", "0 0 29 2 *")]
        {
            let verdict = restore_drill_verdict(DrillVerdictInput {
                max_unverified_age: age,
                schedule,
                ..input(Some(&last), now)
            });
            assert_eq!(verdict.reason, REASON_VERIFIED, "{age} {schedule}: {verdict:?}");
        }
    }

    #[test]
    fn an_unreadable_or_huge_age_never_panics() {
        for age in ["0", "", "8x", "9999999999999999999y", "292y"] {
            let verdict = restore_drill_verdict(DrillVerdictInput {
                max_unverified_age: age,
                ..input(None, "2027-01-05T00:00:00Z")
            });
            if age == "292y" {
                assert!(verdict.verified, "{age}: {verdict:?}");
            } else {
                assert_eq!(verdict.reason, REASON_INVALID_AGE, "{age}");
            }
        }
    }
}
