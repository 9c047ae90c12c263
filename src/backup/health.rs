//! Whether backups are recent enough: the `BackupHealthy` condition and the
//! `ReferralBackupMissing` alert, which must agree; and whether the last backup Job
//! failed (`BackupFailed`, the `ReferralBackupFailed` alert), which is reported at
//! once rather than after 1.5 intervals.
//!
//! The rule: the newest complete backup may be at most 1.5 schedule intervals old.
//! The age is counted from the last success, or, before the first one, from the
//! ReferralSystem's creation, so a new system is not unhealthy before its first
//! backup is due, and one that never manages a backup does turn unhealthy.
//!
//! A cron schedule need not be regular (`0 1 * * 1-5` has a three-day gap over the
//! weekend), so "the interval" is the one around that reference time: from the last
//! time the schedule fired at or before it to the next time it fires after it. For a
//! regular schedule that is simply its period (86400 s for the daily default).
//!
//! The controller exports the same two numbers this computes,
//! `referral_operator_backup_last_success_timestamp_seconds` = [`BackupHealth::since`]
//! and `referral_operator_backup_interval_seconds` = [`BackupHealth::interval_seconds`],
//! and the alert fires on `time() - since > 1.5 * interval`: the very same test.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::schedule::CronSchedule;

/// `BackupHealthy` reasons.
pub const REASON_RECENT: &str = "BackupRecent";
pub const REASON_FIRST_PENDING: &str = "FirstBackupPending";
pub const REASON_OVERDUE: &str = "BackupOverdue";
pub const REASON_NEVER_SUCCEEDED: &str = "NoBackupYet";
pub const REASON_SCHEDULE_NEVER_FIRES: &str = "ScheduleNeverFires";
pub const REASON_INVALID_SCHEDULE: &str = "InvalidSchedule";
pub const REASON_FAILED: &str = "BackupFailed";
/// Longest piece of a Job's own message quoted in the condition.
const MAX_FAILURE_TEXT: usize = 600;

/// A backup Job that failed: its name, when, and the Job's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFailure {
    pub job: String,
    pub at: Timestamp,
    pub why: String,
}

/// What [`backup_health`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct BackupHealthInput<'a> {
    /// Completion time of the newest complete backup (`status.backup.lastSuccess`).
    pub last_success: Option<Timestamp>,
    /// When the ReferralSystem was created.
    pub created: Timestamp,
    /// `spec.backup.schedule`.
    pub schedule: &'a str,
    /// `spec.backup.suspend`: still unhealthy when too old (no backups is the risk),
    /// but the message says why.
    pub suspended: bool,
    /// The newest failed backup Job still kept; it counts when it failed after the
    /// last success.
    pub last_failure: Option<&'a BackupFailure>,
    pub now: Timestamp,
}

/// The verdict, and the numbers the metrics export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHealth {
    pub healthy: bool,
    /// One of the `REASON_*` constants.
    pub reason: &'static str,
    pub message: String,
    /// The time the age is counted from: the last success, or the creation.
    pub since: Timestamp,
    /// The schedule interval around `since`, in seconds; `None` when the schedule
    /// never fires or cannot be read.
    pub interval_seconds: Option<i64>,
    /// When the system turns unhealthy unless a newer backup completes.
    pub due: Option<Timestamp>,
}

/// The schedule interval around `at`: previous-or-equal fire time to the next one;
/// for `@every`, its fixed interval.
pub fn interval_around(schedule: &CronSchedule, at: Timestamp) -> Option<SignedDuration> {
    if let CronSchedule::Every(interval) = schedule {
        return SignedDuration::try_from(*interval).ok();
    }
    let next = schedule.next_after(at)?;
    let previous = match schedule.previous_at_or_before(at) {
        Some(previous) => previous,
        // Nothing fired within the search window before `at`: use the gap after.
        None => return schedule.next_after(next).map(|after| after.duration_since(next)),
    };
    Some(next.duration_since(previous))
}

/// Decides `BackupHealthy`.
pub fn backup_health(input: BackupHealthInput<'_>) -> BackupHealth {
    let since = input.last_success.unwrap_or(input.created);
    let unhealthy =
        |reason, message| BackupHealth { healthy: false, reason, message, since, interval_seconds: None, due: None };
    let schedule = match CronSchedule::parse(input.schedule) {
        Ok(schedule) => schedule,
        Err(why) => {
            return unhealthy(REASON_INVALID_SCHEDULE, format!("spec.backup.schedule cannot be read: {why}"));
        }
    };
    let Some(interval) = interval_around(&schedule, since) else {
        return unhealthy(
            REASON_SCHEDULE_NEVER_FIRES,
            format!("spec.backup.schedule {:?} never fires (no such date), so no backup is ever taken", input.schedule),
        );
    };
    let allowed = SignedDuration::from_secs(interval.as_secs().saturating_mul(3) / 2);
    let due = since.checked_add(allowed).ok();
    let age = input.now.duration_since(since);
    let healthy = age <= allowed;
    let suspended = if input.suspended { " Backups are suspended (spec.backup.suspend)." } else { "" };
    // The messages name fixed times, never an age: an age would change the status
    // on every reconcile, and a reconcile of an unchanged system must write nothing.
    let due_text = due.map(|d| d.to_string()).unwrap_or_else(|| "a time past the calendar's end".into());
    let (reason, message) = match (input.last_success, healthy) {
        (Some(last), true) => (
            REASON_RECENT,
            format!(
                "the newest complete backup finished at {last}; the schedule runs every {}, so the next is due before {due_text}.{suspended}",
                human(interval)
            ),
        ),
        (Some(last), false) => (
            REASON_OVERDUE,
            format!(
                "the newest complete backup finished at {last}, and none since: one was due before {due_text} (1.5 times the schedule's interval of {}): look at the backup Jobs.{suspended}",
                human(interval)
            ),
        ),
        (None, true) => (
            REASON_FIRST_PENDING,
            format!("no backup has completed yet; the first is expected before {due_text}.{suspended}"),
        ),
        (None, false) => (
            REASON_NEVER_SUCCEEDED,
            format!(
                "no backup has completed since the system was created at {}: the first was due before {due_text} (schedule interval {}): look at the backup Jobs.{suspended}",
                input.created,
                human(interval)
            ),
        ),
    };
    let newer_failure = input.last_failure.filter(|failure| input.last_success.is_none_or(|last| failure.at > last));
    if let Some(failure) = newer_failure {
        let why: String = failure.why.chars().take(MAX_FAILURE_TEXT).collect();
        let before = match input.last_success {
            Some(last) => format!("the newest complete backup is still the one that finished at {last}"),
            None => "no backup has completed yet".into(),
        };
        return BackupHealth {
            healthy: false,
            reason: REASON_FAILED,
            message: format!(
                "backup Job {} failed at {}: {why}. The backups before it are kept and the retention deleted nothing; {before}. Look at the Job's pod logs.",
                failure.job, failure.at
            ),
            since,
            interval_seconds: Some(interval.as_secs()),
            due,
        };
    }
    BackupHealth { healthy, reason, message, since, interval_seconds: Some(interval.as_secs()), due }
}

/// `36h`, `2d 4h`, `15m`: enough for a condition message.
fn human(duration: SignedDuration) -> String {
    let seconds = duration.as_secs().max(0);
    let (days, hours, minutes) = (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn health(last: Option<&str>, schedule: &str, now: &str) -> BackupHealth {
        backup_health(BackupHealthInput {
            last_success: last.map(ts),
            created: ts("2026-11-01T12:00:00Z"),
            schedule,
            suspended: false,
            last_failure: None,
            now: ts(now),
        })
    }

    #[test]
    fn a_daily_backup_is_healthy_until_one_and_a_half_days_old() {
        let last = Some("2026-11-23T01:05:00Z");
        let h = health(last, "0 1 * * *", "2026-11-24T13:05:00Z");
        assert!(h.healthy, "{h:?}");
        assert_eq!(h.reason, REASON_RECENT);
        assert_eq!(h.interval_seconds, Some(86_400));
        assert_eq!(h.due, Some(ts("2026-11-24T13:05:00Z")));
        let h = health(last, "0 1 * * *", "2026-11-24T13:05:01Z");
        assert!(!h.healthy);
        assert_eq!(h.reason, REASON_OVERDUE);
        assert!(h.message.contains("due before 2026-11-24T13:05:00Z"), "{}", h.message);
    }

    #[test]
    fn the_message_does_not_move_with_the_clock() {
        let last = Some("2026-11-23T01:05:00Z");
        assert_eq!(
            health(last, "0 1 * * *", "2026-11-23T02:00:00Z"),
            health(last, "0 1 * * *", "2026-11-24T12:00:00Z")
        );
        assert_eq!(
            health(last, "0 1 * * *", "2026-11-25T00:00:00Z"),
            health(last, "0 1 * * *", "2026-12-25T00:00:00Z")
        );
    }

    #[test]
    fn the_interval_follows_an_irregular_schedule() {
        // Weekdays at 01:00. A Friday backup has the weekend gap (3 days) around it,
        // so no alert over the weekend; a Tuesday backup has one day.
        let friday = health(Some("2026-11-27T01:10:00Z"), "0 1 * * 1-5", "2026-11-30T00:00:00Z");
        assert!(friday.healthy);
        assert_eq!(friday.interval_seconds, Some(3 * 86_400));
        let tuesday = health(Some("2026-11-24T01:10:00Z"), "0 1 * * 1-5", "2026-11-25T14:00:00Z");
        assert!(!tuesday.healthy);
        assert_eq!(tuesday.interval_seconds, Some(86_400));
    }

    #[test]
    fn before_the_first_backup_the_age_counts_from_creation() {
        let pending = health(None, "0 1 * * *", "2026-11-02T10:00:00Z");
        assert!(pending.healthy);
        assert_eq!(pending.reason, REASON_FIRST_PENDING);
        assert_eq!(pending.since, ts("2026-11-01T12:00:00Z"));
        let never = health(None, "0 1 * * *", "2026-11-03T10:00:00Z");
        assert!(!never.healthy);
        assert_eq!(never.reason, REASON_NEVER_SUCCEEDED);
    }

    #[test]
    fn suspension_is_named_but_does_not_hide_old_backups() {
        let h = backup_health(BackupHealthInput {
            last_success: Some(ts("2026-11-01T01:00:00Z")),
            created: ts("2026-10-01T00:00:00Z"),
            schedule: "@daily",
            suspended: true,
            last_failure: None,
            now: ts("2026-11-10T00:00:00Z"),
        });
        assert!(!h.healthy);
        assert!(h.message.contains("suspended"), "{}", h.message);
    }

    #[test]
    fn schedules_that_cannot_work_are_unhealthy_with_the_reason() {
        let never = health(None, "0 0 31 2 *", "2026-11-02T10:00:00Z");
        assert!(!never.healthy);
        assert_eq!(never.reason, REASON_SCHEDULE_NEVER_FIRES);
        let invalid = health(None, "0 25 * * *", "2026-11-02T10:00:00Z");
        assert_eq!(invalid.reason, REASON_INVALID_SCHEDULE);
        assert_eq!(invalid.interval_seconds, None);
    }

    #[test]
    fn an_every_schedule_has_its_fixed_interval() {
        let h = health(Some("2026-11-23T01:00:00Z"), "@every 6h", "2026-11-23T09:00:00Z");
        assert!(h.healthy, "{h:?}");
        assert_eq!(h.interval_seconds, Some(6 * 3600));
        assert!(!health(Some("2026-11-23T01:00:00Z"), "@every 6h", "2026-11-23T10:00:01Z").healthy);
        // A day-field restriction robfig reads as "either day": never an empty interval.
        let either = health(Some("2026-11-23T01:00:00Z"), "0 1 31 * 1", "2026-11-24T00:00:00Z");
        assert_eq!(either.interval_seconds, Some(7 * 86_400));
    }

    #[test]
    fn the_verdict_is_the_alerts_expression_on_the_exported_numbers() {
        // time() - since > 1.5 * interval, evaluated on what the metrics carry.
        for (last, now) in [
            ("2026-11-23T01:05:00Z", "2026-11-24T13:04:00Z"),
            ("2026-11-23T01:05:00Z", "2026-11-24T13:06:00Z"),
            ("2026-11-27T01:10:00Z", "2026-12-01T13:00:00Z"),
            ("2026-11-27T01:10:00Z", "2026-12-01T14:00:00Z"),
        ] {
            for schedule in ["0 1 * * *", "0 1 * * 1-5", "*/30 * * * *", "@weekly"] {
                let h = health(Some(last), schedule, now);
                let alert =
                    (ts(now).as_second() - h.since.as_second()) as f64 > 1.5 * h.interval_seconds.unwrap() as f64;
                assert_eq!(h.healthy, !alert, "{schedule} {last} {now}");
            }
        }
    }

    #[test]
    fn a_failed_job_after_the_last_success_is_reported_at_once_and_cleared_by_the_next_success() {
        let failure = BackupFailure {
            job: "main-backup-29412345".into(),
            at: ts("2026-11-24T01:03:00Z"),
            why: "BackoffLimitExceeded: Job has reached the specified backoff limit".into(),
        };
        let judge = |last: Option<&str>, failure: Option<&BackupFailure>| {
            backup_health(BackupHealthInput {
                last_success: last.map(ts),
                created: ts("2026-11-01T12:00:00Z"),
                schedule: "0 1 * * *",
                suspended: false,
                last_failure: failure,
                now: ts("2026-11-24T02:00:00Z"),
            })
        };
        // Only two hours after a successful backup: recent, yet the failed run shows.
        let h = judge(Some("2026-11-23T01:05:00Z"), Some(&failure));
        assert!(!h.healthy);
        assert_eq!(h.reason, REASON_FAILED);
        assert!(
            h.message.contains("main-backup-29412345") && h.message.contains("BackoffLimitExceeded"),
            "{}",
            h.message
        );
        assert!(h.message.contains("2026-11-23T01:05:00Z"), "{}", h.message);
        // The numbers the alerts read do not move with the failure.
        assert_eq!(h.since, ts("2026-11-23T01:05:00Z"));
        assert_eq!(h.interval_seconds, Some(86_400));
        assert_eq!(judge(None, Some(&failure)).reason, REASON_FAILED);
        // A success after the failure clears it.
        let h = judge(Some("2026-11-24T01:30:00Z"), Some(&failure));
        assert!(h.healthy);
        assert_eq!(h.reason, REASON_RECENT);
        // A Job's long message is cut, not copied whole.
        let long = BackupFailure { why: "x".repeat(10_000), ..failure };
        assert!(judge(None, Some(&long)).message.len() < 1000);
    }
}
