//! When a five-field cron schedule fires, in UTC, the way Kubernetes' CronJob
//! controller reads it (robfig/cron's standard parser): lists, ranges, steps, month
//! and weekday names, the `@daily`-style macros, and the rule that when both
//! day-of-month and day-of-week are restricted a day matching either one fires.
//!
//! Written here rather than taken from a crate: the cron crates on crates.io either
//! want a seconds field (`cron`) or bring chrono alongside the jiff this project
//! already has (`croner`), and the two searches below are short.

use k8s_openapi::jiff::civil::{Date, DateTime, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Span, Timestamp};

use crate::crd::cron::check_schedule;

/// How far the searches look: long enough for `0 0 29 2 *` across the eight years
/// between leap days around 2100.
const SEARCH_DAYS: i64 = 366 * 9;

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// Day-of-month or day-of-week is unrestricted (`*`): then both must match.
    either_day_field_is_star: bool,
}

impl CronSchedule {
    /// Parses a schedule; the error names the field, as the validate step does.
    pub fn parse(text: &str) -> Result<Self, String> {
        check_schedule(text)?;
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields.as_slice() else {
            return Err(format!("{text:?} does not have five fields"));
        };
        let (minutes, _) = bits(minute, 0, 59, &[])?;
        let (hours, _) = bits(hour, 0, 23, &[])?;
        let (days_of_month, dom_star) = bits(dom, 1, 31, &[])?;
        let (months, _) = bits(month, 1, 12, &MONTHS)?;
        let (mut days_of_week, dow_star) = bits(dow, 0, 7, &WEEKDAYS)?;
        // 7 is Sunday too.
        if days_of_week & (1 << 7) != 0 {
            days_of_week |= 1;
        }
        Ok(Self {
            minutes,
            hours: hours as u32,
            days_of_month: days_of_month as u32,
            months: months as u16,
            days_of_week: (days_of_week & 0x7f) as u8,
            either_day_field_is_star: dom_star || dow_star,
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let month = date.month() as u32;
        if self.months & (1 << month) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day() as u32) != 0;
        let dow = self.days_of_week & (1 << date.weekday().to_sunday_zero_offset() as u32) != 0;
        if self.either_day_field_is_star { dom && dow } else { dom || dow }
    }

    fn first_time_from(&self, from: (u32, u32)) -> Option<(u32, u32)> {
        (from.0..24).filter(|h| self.hours & (1 << h) != 0).find_map(|h| {
            let start = if h == from.0 { from.1 } else { 0 };
            (start..60).find(|m| self.minutes & (1 << m) != 0).map(|m| (h, m))
        })
    }

    fn last_time_until(&self, until: (u32, u32)) -> Option<(u32, u32)> {
        (0..=until.0).rev().filter(|h| self.hours & (1 << h) != 0).find_map(|h| {
            let end = if h == until.0 { until.1 } else { 59 };
            (0..=end).rev().find(|m| self.minutes & (1 << m) != 0).map(|m| (h, m))
        })
    }

    /// The first time the schedule fires strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = after.to_zoned(TimeZone::UTC).datetime();
        // The next whole minute after `after`.
        let start = truncate_to_minute(start).checked_add(Span::new().minutes(1)).ok()?;
        let mut date = start.date();
        let mut from = (start.hour() as u32, start.minute() as u32);
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date)
                && let Some((h, m)) = self.first_time_from(from)
            {
                return at(date, h, m);
            }
            date = date.tomorrow().ok()?;
            from = (0, 0);
        }
        None
    }

    /// The last time the schedule fired at or before `at_or_before`.
    pub fn previous_at_or_before(&self, at_or_before: Timestamp) -> Option<Timestamp> {
        let start = truncate_to_minute(at_or_before.to_zoned(TimeZone::UTC).datetime());
        let mut date = start.date();
        let mut until = (start.hour() as u32, start.minute() as u32);
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date)
                && let Some((h, m)) = self.last_time_until(until)
            {
                return at(date, h, m);
            }
            date = date.yesterday().ok()?;
            until = (23, 59);
        }
        None
    }
}

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn truncate_to_minute(dt: DateTime) -> DateTime {
    dt.with().second(0).subsec_nanosecond(0).build().unwrap_or(dt)
}

fn at(date: Date, hour: u32, minute: u32) -> Option<Timestamp> {
    let time = Time::new(i8::try_from(hour).ok()?, i8::try_from(minute).ok()?, 0, 0).ok()?;
    date.to_datetime(time).to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

fn value(text: &str, min: u32, names: &[&str]) -> Result<u32, String> {
    if let Some(pos) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(pos as u32 + min);
    }
    text.parse::<u32>().map_err(|_| format!("{text:?} is not a number"))
}

/// The bits of one field, and whether it counts as `*` for the day-field rule
/// (robfig/cron: an item `*` or `?` without a step above 1).
fn bits(field: &str, min: u32, max: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let mut set = 0u64;
    let mut star = false;
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step.parse::<u32>().map_err(|_| format!("bad step {step:?}"))?)),
            None => (item, None),
        };
        let step_value = step.unwrap_or(1).max(1);
        let (low, high) = if range == "*" || range == "?" {
            if step_value == 1 {
                star = true;
            }
            (min, max)
        } else if let Some((low, high)) = range.split_once('-') {
            (value(low, min, names)?, value(high, min, names)?)
        } else {
            let single = value(range, min, names)?;
            // `5/15` means from 5 to the end, every 15.
            (single, if step.is_some() { max } else { single })
        };
        if low < min || high > max || low > high {
            return Err(format!("{item:?} is outside {min}-{max}"));
        }
        let mut v = low;
        while v <= high {
            set |= 1 << v;
            v += step_value;
        }
    }
    Ok((set, star))
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
        assert_eq!(next("0 3 * * 7", "2026-11-23T00:00:00Z"), "2026-11-29T03:00:00Z");
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
    }
}
