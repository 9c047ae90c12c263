//! The one cron grammar of the project: the one Kubernetes' CronJob uses, which is
//! robfig/cron v3's `ParseStandard` (five fields, or an `@` descriptor, `@every`
//! included) plus the API server's refusal of `TZ` anywhere in a schedule
//! (k8s.io/kubernetes `pkg/apis/batch/validation`, `validateScheduleFormat`; our
//! CronJobs carry `timeZone: Etc/UTC` instead).
//!
//! The validate step checks schedules with [`parse`] and `src/backup/schedule.rs`
//! searches fire times in what it returns, so a schedule is read one way everywhere.
//! What robfig accepts that looks odd is accepted here too, on purpose: `?` in any
//! field, empty list items (`1,,2`), anything after `*-` (`*-5` is `*`), `+5`, day of
//! week 0-6 only (7 is refused), and `@every` with a Go duration. `tests/cron_reference.rs`
//! holds this against robfig/cron itself, and the schedule cases of `tests/corpus`
//! go to the API server in `tests/e2e/differential.rs`. No input panics or loops: every number is bounded before it is used.

use std::time::Duration;

use super::common::quoted;
use super::duration::parse_go_duration;

/// A parsed schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Five fields (or a descriptor such as `@daily`), as bit sets.
    Fields(FieldSets),
    /// `@every <duration>`: fires at that interval from when the CronJob was
    /// created, whole seconds, at least one second.
    Every(Duration),
}

/// One bit per allowed value of each field, and the day-field rule's star flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSets {
    pub minutes: u64,
    pub hours: u64,
    pub days_of_month: u64,
    pub months: u64,
    /// Bit 0 is Sunday.
    pub days_of_week: u64,
    /// Day-of-month or day-of-week was written `*` or `?` (without a step above 1):
    /// then a day must match both fields, otherwise either one.
    pub day_star: bool,
}

/// The fields, in order: name, lowest, highest, names of values (from `lowest`).
const FIELDS: [(&str, u64, u64, &[&str]); 5] = [
    ("minute", 0, 59, &[]),
    ("hour", 0, 23, &[]),
    ("day-of-month", 1, 31, &[]),
    ("month", 1, 12, &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]),
    ("day-of-week", 0, 6, &["sun", "mon", "tue", "wed", "thu", "fri", "sat"]),
];

/// Why a schedule was refused: what a person reads in a status condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "a schedule cannot be empty: write five fields (minute hour day-of-month month day-of-week) or a descriptor such as @daily"
    )]
    Empty,
    #[error(
        "{schedule} names a time zone: schedules here are always UTC, and Kubernetes refuses TZ= and CRON_TZ= in a CronJob's schedule"
    )]
    TimeZone { schedule: String },
    #[error(
        "{schedule} is not a descriptor Kubernetes knows: use @yearly, @monthly, @weekly, @daily, @hourly or @every <duration> (e.g. @every 6h)"
    )]
    Descriptor { schedule: String },
    #[error("the duration of {schedule} is not a Go duration such as 90m, 1h30m or 6h: {why}")]
    EveryDuration { schedule: String, why: String },
    #[error(
        "{schedule} has {count} fields; a schedule has five, separated by spaces: minute hour day-of-month month day-of-week (UTC)"
    )]
    FieldCount { schedule: String, count: usize },
    #[error("{field} field {text} of {schedule}: {why}")]
    Field { field: &'static str, text: String, schedule: String, why: String },
}

/// Parses a schedule as Kubernetes' CronJob does.
pub fn parse(schedule: &str) -> Result<Schedule, CronError> {
    if schedule.is_empty() {
        return Err(CronError::Empty);
    }
    let shown = quoted(schedule);
    if schedule.contains("TZ") {
        return Err(CronError::TimeZone { schedule: shown });
    }
    if schedule.starts_with('@') {
        return descriptor(schedule, shown);
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = fields.as_slice() else {
        return Err(CronError::FieldCount { schedule: shown, count: fields.len() });
    };
    let mut sets = [0u64; 5];
    let mut stars = [false; 5];
    for (i, text) in [minute, hour, dom, month, dow].into_iter().enumerate() {
        let (label, min, max, names) = FIELDS[i];
        let (bits, star) = field(text, min, max, names).map_err(|why| CronError::Field {
            field: label,
            text: quoted(text),
            schedule: shown.clone(),
            why,
        })?;
        sets[i] = bits;
        stars[i] = star;
    }
    Ok(Schedule::Fields(FieldSets {
        minutes: sets[0],
        hours: sets[1],
        days_of_month: sets[2],
        months: sets[3],
        days_of_week: sets[4],
        day_star: stars[2] || stars[4],
    }))
}

/// Checks a schedule; the message names the field and what is allowed.
pub fn check_schedule(schedule: &str) -> Result<(), String> {
    parse(schedule).map(|_| ()).map_err(|e| e.to_string())
}

fn descriptor(schedule: &str, shown: String) -> Result<Schedule, CronError> {
    let fields = |minutes: u64, hours: u64, days_of_month: u64, months: u64, days_of_week: u64| {
        Schedule::Fields(FieldSets { minutes, hours, days_of_month, months, days_of_week, day_star: true })
    };
    let all = |min: u64, max: u64| range_bits(min, max, 1);
    Ok(match schedule {
        "@yearly" | "@annually" => fields(1, 1, 1 << 1, 1 << 1, all(0, 6)),
        "@monthly" => fields(1, 1, 1 << 1, all(1, 12), all(0, 6)),
        "@weekly" => fields(1, 1, all(1, 31), all(1, 12), 1),
        "@daily" | "@midnight" => fields(1, 1, all(1, 31), all(1, 12), all(0, 6)),
        "@hourly" => fields(1, all(0, 23), all(1, 31), all(1, 12), all(0, 6)),
        other => {
            let Some(text) = other.strip_prefix("@every ") else {
                return Err(CronError::Descriptor { schedule: shown });
            };
            let nanos = parse_go_duration(text)
                .map_err(|why| CronError::EveryDuration { schedule: shown.clone(), why: why.to_string() })?;
            // robfig's Every: at least a second, cut to whole seconds.
            let seconds = u64::try_from(nanos / 1_000_000_000).unwrap_or(0).max(1);
            Schedule::Every(Duration::from_secs(seconds))
        }
    })
}

/// One field: a comma-separated list of ranges (empty items are skipped, as
/// robfig's `strings.FieldsFunc` does). The flag is robfig's star bit.
fn field(text: &str, min: u64, max: u64, names: &[&str]) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for item in text.split(',').filter(|item| !item.is_empty()) {
        let (item_bits, item_star) = range(item, min, max, names)?;
        bits |= item_bits;
        star |= item_star;
    }
    Ok((bits, star))
}

/// `*`, `?`, `N`, `N-M`, each with an optional `/step`; `N/step` runs to the end.
fn range(item: &str, min: u64, max: u64, names: &[&str]) -> Result<(u64, bool), String> {
    let allowed = || allowed_values(min, max, names);
    let parts: Vec<&str> = item.split('/').collect();
    let (low_high, step_text) = match parts.as_slice() {
        [low_high] => (*low_high, None),
        [low_high, step] => (*low_high, Some(*step)),
        _ => return Err(format!("{} has more than one '/'", quoted(item))),
    };
    let bounds: Vec<&str> = low_high.split('-').collect();
    let single = bounds.len() == 1;
    let (mut start, mut end, mut star) = (min, max, false);
    if bounds[0] == "*" || bounds[0] == "?" {
        star = true;
    } else {
        start = value(bounds[0], names).map_err(|why| format!("{why}; {}", allowed()))?;
        end = match bounds.as_slice() {
            [_] => start,
            [_, high] => value(high, names).map_err(|why| format!("{why}; {}", allowed()))?,
            _ => return Err(format!("{} has more than one '-'", quoted(item))),
        };
    }
    let step = match step_text {
        None => 1,
        Some(text) => {
            let step = number(text).map_err(|why| format!("the step after '/' {why}"))?;
            if single {
                end = max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
    };
    if start < min {
        return Err(format!("{start} is below the lowest allowed value; {}", allowed()));
    }
    if end > max {
        return Err(format!("{end} is above the highest allowed value; {}", allowed()));
    }
    if start > end {
        return Err(format!("the range {} runs backwards ({start} is after {end})", quoted(low_high)));
    }
    if step == 0 {
        return Err("a step must be at least 1 (*/0 never advances)".into());
    }
    Ok((range_bits(start, end, step), star))
}

/// The bits from `start` to `end` (at most 63) every `step`, without overflow for
/// any step.
fn range_bits(start: u64, end: u64, step: u64) -> u64 {
    let mut bits = 0u64;
    let mut v = start;
    while v <= end && v < 64 {
        bits |= 1 << v;
        match v.checked_add(step) {
            Some(next) => v = next,
            None => break,
        }
    }
    bits
}

/// A name (case-insensitive) or a number.
fn value(text: &str, names: &[&str]) -> Result<u64, String> {
    if let Some(pos) = names.iter().position(|name| name.eq_ignore_ascii_case(text)) {
        // Month names count from 1, weekday names from 0: the callers' `min`.
        let base = if names.len() == 12 { 1 } else { 0 };
        return Ok(pos as u64 + base);
    }
    number(text)
}

/// A whole number as Go's `strconv.Atoi` reads it (an optional sign, decimal
/// digits, within i64), and not negative.
fn number(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{} is not a number", quoted(text)));
    }
    match text.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("{n} is negative")),
        Ok(n) => Ok(n.unsigned_abs()),
        Err(_) => Err(format!("{} is too large", quoted(text))),
    }
}

fn allowed_values(min: u64, max: u64, names: &[&str]) -> String {
    match (names.first(), names.last()) {
        (Some(first), Some(last)) => {
            format!("allowed are {min}-{max} or the names {}-{}", first.to_uppercase(), last.to_uppercase())
        }
        _ => format!("allowed are {min}-{max}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_schedules_people_write() {
        for ok in [
            "0 3 * * 0",
            "0 1 * * *",
            "*/15 * * * *",
            "0 4 * * MON",
            "0 0 1 JAN-JUN *",
            "5,35 9-17/2 * * 1-5",
            "@daily",
            "0 0 ? * *",
            "@every 6h",
        ] {
            assert_eq!(check_schedule(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn accepts_what_robfig_accepts_however_odd() {
        for ok in ["1,,2 * * * *", ",5 * * * *", "*-5 * * * *", "+5 * * * *", "? ? ? ? ?", "@every 0s", "@every -1h"] {
            assert_eq!(check_schedule(ok), Ok(()), "{ok}");
        }
        assert_eq!(parse("@every 90m"), Ok(Schedule::Every(Duration::from_secs(5400))));
        assert_eq!(parse("@every 1500ms"), Ok(Schedule::Every(Duration::from_secs(1))));
        assert_eq!(parse("@every 1ns"), Ok(Schedule::Every(Duration::from_secs(1))));
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let cases = [
            ("61 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("* * * 13 *", "month"),
            ("* * * * 7", "day-of-week"),
            ("*/0 * * * *", "minute"),
            ("5-1 * * * *", "minute"),
            ("x * * * *", "minute"),
            ("1/2/3 * * * *", "minute"),
            ("1-2-3 * * * *", "minute"),
            ("-1 * * * *", "minute"),
            ("* * * * */-1", "day-of-week"),
        ];
        for (bad, field) in cases {
            let err = check_schedule(bad).unwrap_err();
            assert!(err.starts_with(field), "{bad}: {err}");
        }
        assert!(check_schedule("* * * *").unwrap_err().contains("4 fields"));
        assert!(check_schedule(" @daily").unwrap_err().contains("1 fields"));
        assert!(check_schedule("@fortnightly").unwrap_err().contains("not a descriptor"));
        assert!(check_schedule("@daily ").unwrap_err().contains("not a descriptor"));
        assert!(check_schedule("@every 1d").unwrap_err().contains("Go duration"));
        assert!(check_schedule("CRON_TZ=UTC 0 * * * *").unwrap_err().contains("time zone"));
        assert!(check_schedule("").unwrap_err().contains("cannot be empty"));
    }

    #[test]
    fn steps_and_numbers_near_the_integer_limits_neither_panic_nor_loop() {
        for step in ["4294967295", "4294967296", "9223372036854775807", "18446744073709551615", "99999999999999999999"]
        {
            let text = format!("*/{step} * * * *");
            let result = parse(&text);
            if step.len() <= 19 && step.parse::<i64>().is_ok() {
                let Ok(Schedule::Fields(sets)) = result else { panic!("{text}: {result:?}") };
                assert_eq!(sets.minutes, 1, "{text}: only minute 0");
            } else {
                assert!(result.unwrap_err().to_string().contains("too large"), "{text}");
            }
            assert!(parse(&format!("{step} * * * *")).is_err());
        }
        assert_eq!(range_bits(0, 63, u64::MAX), 1);
        assert_eq!(range_bits(0, 63, 1), u64::MAX);
    }

    #[test]
    fn the_star_rule_follows_robfig() {
        let sets = |s: &str| match parse(s).unwrap() {
            Schedule::Fields(sets) => sets,
            Schedule::Every(_) => panic!(),
        };
        assert!(sets("0 0 * * 1").day_star);
        assert!(sets("0 0 1 * ?").day_star);
        assert!(sets("0 0 1 * */1").day_star);
        assert!(!sets("0 0 1 * */2").day_star);
        assert!(!sets("0 0 1 * 1").day_star);
        assert_eq!(sets("@weekly"), sets("0 0 * * 0"));
        assert_eq!(sets("@monthly"), sets("0 0 1 * *"));
        assert_eq!(sets("@yearly"), sets("0 0 1 1 *"));
        assert_eq!(sets("@hourly"), sets("0 * * * *"));
        assert_eq!(sets("0 0 * JAN sun").months, 1 << 1);
        assert_eq!(sets("0 0 * * sat").days_of_week, 1 << 6);
    }

    #[test]
    fn a_huge_field_is_not_echoed_whole() {
        let huge = format!("{} * * * *", "9".repeat(100_000));
        let err = check_schedule(&huge).unwrap_err();
        assert!(err.len() < 600, "{} characters", err.len());
    }
}
