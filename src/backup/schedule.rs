//! When a cron schedule fires, in UTC, the way Kubernetes' CronJob controller reads
//! it (robfig/cron's standard parser): the schedule is parsed once, by the project's
//! one grammar in `src/crd/cron.rs`, and this module searches the fire times, with the
//! rule that when both day-of-month and day-of-week are restricted a day matching
//! either one fires.
//!
//! Written here rather than taken from a crate: the cron crates on crates.io either
//! want a seconds field (`cron`) or bring chrono alongside the jiff this project
//! already has (`croner`), and the two searches below are short.

use std::time::Duration;

use k8s_openapi::jiff::civil::{Date, DateTime, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Span, Timestamp};

use crate::crd::cron::{self, FieldSets};

/// How far the searches look: long enough for `0 0 29 2 *` across the eight years
/// between leap days around 2100.
const SEARCH_DAYS: i64 = 366 * 9;

/// A parsed schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronSchedule {
    /// Fire times from the calendar fields.
    Calendar(FieldSets),
    /// `@every`: a fixed interval counted from when the CronJob was created, so the
    /// fire times themselves are the CronJob controller's to know.
    Every(Duration),
}

impl CronSchedule {
    /// Parses a schedule; the error names the field, as the validate step does.
    pub fn parse(text: &str) -> Result<Self, String> {
        match cron::parse(text).map_err(|e| e.to_string())? {
            cron::Schedule::Fields(sets) => Ok(Self::Calendar(sets)),
            cron::Schedule::Every(interval) => Ok(Self::Every(interval)),
        }
    }

    fn calendar(&self) -> Option<&FieldSets> {
        match self {
            Self::Calendar(sets) => Some(sets),
            Self::Every(_) => None,
        }
    }

    /// The first time the schedule fires strictly after `after` (`None` for
    /// `@every`, whose times depend on the CronJob's creation).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let sets = self.calendar()?;
        let start = after.to_zoned(TimeZone::UTC).datetime();
        // The next whole minute after `after`.
        let start = truncate_to_minute(start).checked_add(Span::new().minutes(1)).ok()?;
        let mut date = start.date();
        let mut from = (start.hour() as u32, start.minute() as u32);
        for _ in 0..SEARCH_DAYS {
            if day_matches(sets, date)
                && let Some((h, m)) = first_time_from(sets, from)
            {
                return at(date, h, m);
            }
            date = date.tomorrow().ok()?;
            from = (0, 0);
        }
        None
    }

    /// The last time the schedule fired at or before `at_or_before` (`None` for
    /// `@every`).
    pub fn previous_at_or_before(&self, at_or_before: Timestamp) -> Option<Timestamp> {
        let sets = self.calendar()?;
        let start = truncate_to_minute(at_or_before.to_zoned(TimeZone::UTC).datetime());
        let mut date = start.date();
        let mut until = (start.hour() as u32, start.minute() as u32);
        for _ in 0..SEARCH_DAYS {
            if day_matches(sets, date)
                && let Some((h, m)) = last_time_until(sets, until)
            {
                return at(date, h, m);
            }
            date = date.yesterday().ok()?;
            until = (23, 59);
        }
        None
    }
}

fn bit(set: u64, value: u32) -> bool {
    value < 64 && set & (1 << value) != 0
}

fn day_matches(sets: &FieldSets, date: Date) -> bool {
    if !bit(sets.months, date.month().unsigned_abs().into()) {
        return false;
    }
    let dom = bit(sets.days_of_month, date.day().unsigned_abs().into());
    let dow = bit(sets.days_of_week, date.weekday().to_sunday_zero_offset().unsigned_abs().into());
    if sets.day_star { dom && dow } else { dom || dow }
}

fn first_time_from(sets: &FieldSets, from: (u32, u32)) -> Option<(u32, u32)> {
    (from.0..24).filter(|h| bit(sets.hours, *h)).find_map(|h| {
        let start = if h == from.0 { from.1 } else { 0 };
        (start..60).find(|m| bit(sets.minutes, *m)).map(|m| (h, m))
    })
}

fn last_time_until(sets: &FieldSets, until: (u32, u32)) -> Option<(u32, u32)> {
    (0..=until.0).rev().filter(|h| bit(sets.hours, *h)).find_map(|h| {
        let end = if h == until.0 { until.1 } else { 59 };
        (0..=end).rev().find(|m| bit(sets.minutes, *m)).map(|m| (h, m))
    })
}

fn truncate_to_minute(dt: DateTime) -> DateTime {
    dt.with().second(0).subsec_nanosecond(0).build().unwrap_or(dt)
}

fn at(date: Date, hour: u32, minute: u32) -> Option<Timestamp> {
    let time = Time::new(i8::try_from(hour).ok()?, i8::try_from(minute).ok()?, 0, 0).ok()?;
    date.to_datetime(time).to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        CronSchedule::parse(schedule).unwrap().next_after(ts(after)).map(|t| t.to_string()).unwrap_or_default()
    }

    fn previous(schedule: &str, at: &str) -> String {
        CronSchedule::parse(schedule).unwrap().previous_at_or_before(ts(at)).map(|t| t.to_string()).unwrap_or_default()
    }

    #[test]
    fn daily_weekly_and_hourly_schedules() {
        assert_eq!(next("0 1 * * *", "2026-11-23T00:59:59Z"), "2026-11-23T01:00:00Z");
        assert_eq!(next("0 1 * * *", "2026-11-23T01:00:00Z"), "2026-11-24T01:00:00Z");
        assert_eq!(previous("0 1 * * *", "2026-11-23T01:00:00Z"), "2026-11-23T01:00:00Z");
        assert_eq!(previous("0 1 * * *", "2026-11-23T00:59:00Z"), "2026-11-22T01:00:00Z");
        // 2026-11-23 is a Monday; the chain check's default runs on Sundays.
        assert_eq!(next("0 3 * * 0", "2026-11-23T00:00:00Z"), "2026-11-29T03:00:00Z");
        assert_eq!(next("0 3 * * SUN", "2026-11-23T00:00:00Z"), "2026-11-29T03:00:00Z");
        assert_eq!(next("0 3 ? * SUN", "2026-11-23T00:00:00Z"), "2026-11-29T03:00:00Z");
        assert_eq!(next("@hourly", "2026-11-23T10:30:00Z"), "2026-11-23T11:00:00Z");
        assert_eq!(next("*/15 * * * *", "2026-11-23T10:31:00Z"), "2026-11-23T10:45:00Z");
        assert_eq!(next("5/20 * * * *", "2026-11-23T10:26:00Z"), "2026-11-23T10:45:00Z");
        assert_eq!(previous("@monthly", "2026-11-23T10:30:00Z"), "2026-11-01T00:00:00Z");
    }

    #[test]
    fn day_of_month_and_day_of_week_together_mean_either() {
        // The 1st of the month or any Friday: 2026-11-27 is a Friday, before 1 Dec.
        assert_eq!(next("0 0 1 * 5", "2026-11-23T00:00:00Z"), "2026-11-27T00:00:00Z");
        // With a star in one of them, both must match: Fridays only.
        assert_eq!(next("0 0 * * 5", "2026-11-23T00:00:00Z"), "2026-11-27T00:00:00Z");
        // Every other day of the month (a step, so not a star) or Mondays.
        assert_eq!(next("0 0 */2 * 1", "2026-11-24T00:00:00Z"), "2026-11-25T00:00:00Z");
    }

    #[test]
    fn leap_days_and_impossible_dates() {
        assert_eq!(next("0 0 29 2 *", "2026-03-01T00:00:00Z"), "2028-02-29T00:00:00Z");
        assert_eq!(previous("0 0 29 2 *", "2026-03-01T00:00:00Z"), "2024-02-29T00:00:00Z");
        let never = CronSchedule::parse("0 0 31 2 *").unwrap();
        assert_eq!(never.next_after(ts("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn bad_schedules_name_the_field() {
        assert!(CronSchedule::parse("61 * * * *").unwrap_err().starts_with("minute"));
        assert!(CronSchedule::parse("* * *").is_err());
        // Kubernetes' grammar: day of week is 0-6.
        assert!(CronSchedule::parse("0 3 * * 7").unwrap_err().starts_with("day-of-week"));
    }

    #[test]
    fn every_has_no_calendar_times() {
        let every = CronSchedule::parse("@every 6h").unwrap();
        assert_eq!(every, CronSchedule::Every(Duration::from_secs(6 * 3600)));
        assert_eq!(every.next_after(ts("2026-11-23T00:00:00Z")), None);
    }
}
