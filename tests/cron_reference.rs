//! The one cron grammar (`src/crd/cron.rs`, with the fire times of
//! `src/backup/schedule.rs`) against robfig/cron v3 itself, as Kubernetes' CronJob
//! reads a schedule: the Go yardstick of `tests/reference` parses each schedule with
//! `cron.ParseStandard` (then refuses `TZ` as the API server does) and lists its next
//! five fire times after 2026-11-23T00:00Z. Both must accept and refuse the same
//! schedules, and agree on every fire time and `@every` interval.

mod support;

use k8s_openapi::jiff::Timestamp;
use referral_operator::backup::schedule::CronSchedule;
use referral_operator::crd::cron;

/// Schedules written by people, odd ones robfig accepts, and mistakes.
const SCHEDULES: &[&str] = &[
    "0 1 * * *",
    "*/5 * * * *",
    "30 2 * * 0",
    "0 3 1 * *",
    "15 4 1,15 * 1-5",
    "0 0 29 2 *",
    "0 0 31 * *",
    "0 0 30 2 *",
    "59 23 31 12 6",
    "0 */6 * * *",
    "5-55/10 8-18 * * MON-FRI",
    "0 12 * JAN,JUL sun",
    "0 12 * jan-mar *",
    "0 0 ? * *",
    "0 0 * * ?",
    "? ? ? ? ?",
    "1,,2 * * * *",
    "*-5 * * * *",
    "+5 * * * *",
    "0 0 1-31/2 * *",
    "0 0 * * 1/2",
    "0 0 * * 6-0",
    "0 0 1 * 1",
    "0 0 13 * 5",
    "0 0 L * *",
    "0 0 * * 7",
    "60 * * * *",
    "* 24 * * *",
    "* * 0 * *",
    "* * 32 * *",
    "* * * 0 *",
    "* * * 13 *",
    "*/0 * * * *",
    "5-1 * * * *",
    "1-2-3 * * * *",
    "a * * * *",
    "* * * FOO *",
    "-1 * * * *",
    "",
    " ",
    "* * * *",
    "* * * * * *",
    "0 0 * * * 2026",
    "TZ=UTC 0 0 * * *",
    "CRON_TZ=Europe/Berlin 0 0 * * *",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
    "@reboot",
    "@every 6h",
    "@every 90m",
    "@every 1h30m",
    "@every 45s",
    "@every 500ms",
    "@every 0s",
    "@every -1h",
    "@every 1d",
    "@every",
    "@every 1.5h",
    "@daily ",
    "0\t1 * * *",
    "  0 1 * * *  ",
    "0 1 * * * ",
    "18446744073709551616 * * * *",
    "*/4294967296 * * * *",
    "0-59/4294967295 * * * *",
];

/// Go's `time.Duration.String()` of a whole number of seconds.
fn go_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[test]
fn schedules_are_read_as_kubernetes_reads_them() {
    let Some(tool) = support::reference_tool() else { return };
    let inputs: Vec<String> = SCHEDULES.iter().map(|s| s.to_string()).collect();
    let answers = support::ask_reference(&tool, "cron", &inputs);
    let from: Timestamp = "2026-11-23T00:00:00Z".parse().unwrap();
    let mut disagreements = Vec::new();
    let (mut refused, mut timed) = (0, 0);
    for (schedule, answer) in SCHEDULES.iter().zip(&answers) {
        let theirs_ok = answer.get("error").is_none();
        let ours = cron::parse(schedule);
        if ours.is_ok() != theirs_ok {
            disagreements.push(format!("{schedule:?}: ours {ours:?}, robfig {answer}"));
            continue;
        }
        let Ok(parsed) = ours else {
            refused += 1;
            continue;
        };
        match parsed {
            cron::Schedule::Every(interval) => {
                let theirs = answer["value"].as_str().unwrap_or_default();
                if go_duration(interval) != theirs {
                    disagreements.push(format!("{schedule:?}: every {interval:?}, robfig {theirs}"));
                }
            }
            cron::Schedule::Fields(_) => {
                let schedule_times = CronSchedule::parse(schedule).expect("parsed once already");
                let mut ours = Vec::new();
                let mut at = from;
                for _ in 0..5 {
                    let Some(next) = schedule_times.next_after(at) else { break };
                    ours.push(next.to_string());
                    at = next;
                }
                let theirs: Vec<String> = answer["next"]
                    .as_array()
                    .map(|a| a.iter().map(|t| t.as_str().unwrap().parse::<Timestamp>().unwrap().to_string()).collect())
                    .unwrap_or_default();
                timed += usize::from(!ours.is_empty());
                if ours != theirs {
                    disagreements.push(format!("{schedule:?}: ours {ours:?}, robfig {theirs:?}"));
                }
            }
        }
    }
    assert!(disagreements.is_empty(), "the grammars disagree:\n{}", disagreements.join("\n"));
    // Both kinds of answer were compared, or the test proved nothing.
    assert!(refused >= 20 && timed >= 20, "{refused} refused and {timed} timed schedules compared");
}
