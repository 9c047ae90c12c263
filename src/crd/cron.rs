//! Five-field cron schedules, checked field by field. The schema only checks the
//! shape (five fields or a macro); this catches `61 * * * *` or `* * * 13 *` before a
//! CronJob is created and refused.

/// Checks a schedule; the error names the field and the allowed range.
pub fn check_schedule(schedule: &str) -> Result<(), String> {
    let schedule = schedule.trim();
    if let Some(name) = schedule.strip_prefix('@') {
        return match name {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => Ok(()),
            _ => Err(format!("unknown cron macro @{name}: use @hourly, @daily, @weekly, @monthly or @yearly")),
        };
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "{schedule:?} has {} fields; a schedule has five: minute hour day-of-month month day-of-week (UTC)",
            fields.len()
        ));
    }
    const SPECS: [(&str, u32, u32, &[&str]); 5] = [
        ("minute", 0, 59, &[]),
        ("hour", 0, 23, &[]),
        ("day-of-month", 1, 31, &[]),
        ("month", 1, 12, &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]),
        ("day-of-week", 0, 7, &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]),
    ];
    for (field, (label, min, max, names)) in fields.iter().zip(SPECS) {
        check_field(field, min, max, names)
            .map_err(|why| format!("{label} field {field:?} of {schedule:?}: {why} (allowed {min}-{max})"))?;
    }
    Ok(())
}

fn check_field(field: &str, min: u32, max: u32, names: &[&str]) -> Result<(), String> {
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(s) if s >= 1 => {}
                _ => return Err(format!("step {step:?} must be a whole number of at least 1")),
            }
        }
        if range == "*" || (range == "?" && names.len() == 7) {
            continue;
        }
        let (low, high) = match range.split_once('-') {
            Some((low, high)) => (value(low, min, max, names)?, value(high, min, max, names)?),
            None => {
                let v = value(range, min, max, names)?;
                (v, v)
            }
        };
        if low > high {
            return Err(format!("range {range:?} runs backwards"));
        }
    }
    Ok(())
}

fn value(text: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, String> {
    if let Some(pos) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        // Month names count from 1 (JAN = 1), weekday names from 0 (SUN = 0).
        return Ok(pos as u32 + min);
    }
    match text.parse::<u32>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is out of range")),
        Err(_) => Err(format!("{text:?} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::check_schedule;

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
            "0 0 * * 7",
        ] {
            assert_eq!(check_schedule(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let cases = [
            ("61 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day-of-week"),
            ("*/0 * * * *", "minute"),
            ("5-1 * * * *", "minute"),
            ("x * * * *", "minute"),
        ];
        for (bad, field) in cases {
            let err = check_schedule(bad).unwrap_err();
            assert!(err.starts_with(field), "{bad}: {err}");
        }
        assert!(check_schedule("* * * *").unwrap_err().contains("4 fields"));
        assert!(check_schedule("@fortnightly").unwrap_err().contains("unknown cron macro"));
    }
}
