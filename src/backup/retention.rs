//! The retention planner: which backups to keep and which to delete, as a pure
//! function of the folder names, whether each is complete, the policy and the time.
//!
//! The rule is grandfather-father-son over UTC calendar periods: keep the newest
//! complete backup of each of the last `daily` days, `weekly` ISO weeks and `monthly`
//! months. Periods are counted back from the period of the *anchor*, the newest
//! complete backup that is not dated in the future, rather than from the clock: if
//! backups stop, pruning never erodes the history that is left, and the windows only
//! move when a new backup completes. A day, week or month without a backup still
//! counts as one of the periods (a gap is not filled from older periods).
//!
//! What the planner never deletes, whatever the policy:
//! - the newest complete backup (the anchor, and any complete backup dated in the
//!   future, which is kept and reported: a clock that ran ahead must not make real
//!   backups look old, so such backups are left out of the anchor choice);
//! - incomplete backups (`NAME.partial/`, or a folder without its completion marker).
//!   Recent ones are runs in progress; older than [`PlanOptions::stale_after`] they
//!   are reported as stale, and deleted only when [`PlanOptions::delete_stale`] says so;
//! - names that do not parse as backup names: reported, never touched.
//!
//! It does no I/O: [`crate::backup::store`] lists the folder and carries the plan out.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::civil::Date;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Span, Timestamp};
use serde::Serialize;

use super::name::{BackupName, PARTIAL_SUFFIX};
use crate::crd::RetentionSpec;

/// How many periods of each kind keep a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetentionPolicy {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

impl From<&RetentionSpec> for RetentionPolicy {
    fn from(spec: &RetentionSpec) -> Self {
        Self { daily: spec.daily, weekly: spec.weekly, monthly: spec.monthly }
    }
}

/// One folder in the backup directory, as the store saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEntry {
    /// The folder name, with `.partial` when the run has not been finalized.
    pub name: String,
    /// The folder has its completion marker (and is not a `.partial`).
    pub complete: bool,
}

impl BackupEntry {
    pub fn complete(name: impl Into<String>) -> Self {
        Self { name: name.into(), complete: true }
    }
    pub fn incomplete(name: impl Into<String>) -> Self {
        Self { name: name.into(), complete: false }
    }
}

/// Tolerances of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// A complete backup dated more than this after "now" is treated as dated in the
    /// future: kept, reported, and not used as the anchor.
    pub future_tolerance: SignedDuration,
    /// An incomplete backup older than this cannot be a run in progress (the backup
    /// Job's deadline is shorter) and is reported as stale.
    pub stale_after: SignedDuration,
    /// Delete stale incomplete backups. Off unless asked for.
    pub delete_stale: bool,
}

/// The backup Job's `activeDeadlineSeconds`: no run can write for longer.
pub const BACKUP_JOB_DEADLINE_SECONDS: i64 = 6 * 3600;

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            future_tolerance: SignedDuration::from_mins(10),
            // The Job's deadline plus an hour for clock differences between nodes.
            stale_after: SignedDuration::from_secs(BACKUP_JOB_DEADLINE_SECONDS + 3600),
            delete_stale: false,
        }
    }
}

/// Why a backup is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeepReason {
    /// The newest complete backup not dated in the future.
    Newest,
    /// Newest of this UTC day.
    Daily(Date),
    /// Newest of this ISO week (ISO year, week number).
    Weekly(i16, i8),
    /// Newest of this month (year, month).
    Monthly(i16, i8),
    /// Dated after "now": a clock ran ahead. Kept until a person looks.
    FutureDated,
}

impl std::fmt::Display for KeepReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Newest => f.write_str("newest"),
            Self::Daily(date) => write!(f, "daily {date}"),
            Self::Weekly(year, week) => write!(f, "weekly {year:04}-W{week:02}"),
            Self::Monthly(year, month) => write!(f, "monthly {year:04}-{month:02}"),
            Self::FutureDated => f.write_str("future-dated"),
        }
    }
}

impl Serialize for KeepReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A complete backup the plan keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptBackup {
    pub name: String,
    pub timestamp: Timestamp,
    pub reasons: Vec<KeepReason>,
}

/// Why the plan deletes a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeleteReason {
    /// A complete backup no period keeps.
    Superseded,
    /// An incomplete backup older than the stale threshold, with `delete_stale` on.
    StaleIncomplete,
}

/// A folder the plan deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedDeletion {
    pub name: String,
    pub timestamp: Timestamp,
    pub reason: DeleteReason,
}

/// An entry the plan leaves alone and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reported {
    pub name: String,
    pub why: String,
}

/// What to keep, what to delete, and what to tell a person about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPlan {
    /// The newest complete backup not dated in the future; periods count back from its.
    pub anchor: Option<String>,
    /// Complete backups kept, newest first.
    pub keep: Vec<KeptBackup>,
    /// Folders to delete, newest first.
    pub delete: Vec<PlannedDeletion>,
    /// Incomplete backups young enough to be runs in progress. Left alone.
    pub in_progress: Vec<String>,
    /// Incomplete backups older than the stale threshold (left alone unless
    /// `delete_stale`, then also listed in `delete`).
    pub stale: Vec<String>,
    /// Complete backups dated in the future. Kept (also in `keep`).
    pub future_dated: Vec<String>,
    /// Names that are not backup names. Never touched.
    pub unrecognized: Vec<Reported>,
}

impl RetentionPlan {
    /// Names of the kept backups, newest first.
    pub fn kept_names(&self) -> Vec<&str> {
        self.keep.iter().map(|k| k.name.as_str()).collect()
    }

    /// Whether the plan deletes nothing.
    pub fn deletes_nothing(&self) -> bool {
        self.delete.is_empty()
    }
}

struct Parsed {
    name: String,
    timestamp: Timestamp,
    complete: bool,
}

/// Plans with the default options.
pub fn plan(entries: &[BackupEntry], policy: RetentionPolicy, now: Timestamp) -> RetentionPlan {
    plan_with(entries, policy, now, PlanOptions::default())
}

/// Plans the retention of `entries` under `policy` at time `now`.
pub fn plan_with(
    entries: &[BackupEntry],
    policy: RetentionPolicy,
    now: Timestamp,
    options: PlanOptions,
) -> RetentionPlan {
    let mut plan = RetentionPlan::default();
    let parsed = parse_entries(entries, &mut plan);

    let (complete, incomplete): (Vec<&Parsed>, Vec<&Parsed>) = parsed.values().partition(|p| p.complete);
    for entry in incomplete {
        let age = now.duration_since(entry.timestamp);
        if age > options.stale_after {
            plan.stale.push(entry.name.clone());
            if options.delete_stale {
                plan.delete.push(PlannedDeletion {
                    name: entry.name.clone(),
                    timestamp: entry.timestamp,
                    reason: DeleteReason::StaleIncomplete,
                });
            }
        } else {
            plan.in_progress.push(entry.name.clone());
        }
    }

    let horizon = now.checked_add(options.future_tolerance).unwrap_or(Timestamp::MAX);
    let (future, mut eligible): (Vec<&Parsed>, Vec<&Parsed>) =
        complete.into_iter().partition(|p| p.timestamp > horizon);
    // Newest first; the name breaks ties so two backups of the same second are ordered.
    eligible.sort_by(|a, b| (b.timestamp, &b.name).cmp(&(a.timestamp, &a.name)));

    let mut reasons: BTreeMap<&str, BTreeSet<KeepReason>> = BTreeMap::new();
    for entry in &future {
        plan.future_dated.push(entry.name.clone());
        reasons.entry(&entry.name).or_default().insert(KeepReason::FutureDated);
    }
    if let Some(anchor) = eligible.first() {
        plan.anchor = Some(anchor.name.clone());
        reasons.entry(&anchor.name).or_default().insert(KeepReason::Newest);
        let windows = Windows::new(utc_date(anchor.timestamp), policy);
        let mut seen_days = BTreeSet::new();
        let mut seen_weeks = BTreeSet::new();
        let mut seen_months = BTreeSet::new();
        for entry in &eligible {
            let date = utc_date(entry.timestamp);
            // Newest first, so the first entry seen in a period is that period's newest.
            if windows.has_day(date) && seen_days.insert(date) {
                reasons.entry(&entry.name).or_default().insert(KeepReason::Daily(date));
            }
            let week = date.iso_week_date();
            let week_key = (week.year(), week.week());
            if windows.has_week(date) && seen_weeks.insert(week_key) {
                reasons.entry(&entry.name).or_default().insert(KeepReason::Weekly(week_key.0, week_key.1));
            }
            let month_key = (date.year(), date.month());
            if windows.has_month(date) && seen_months.insert(month_key) {
                reasons.entry(&entry.name).or_default().insert(KeepReason::Monthly(month_key.0, month_key.1));
            }
        }
    }

    let mut kept: Vec<&Parsed> = future.iter().chain(eligible.iter()).copied().collect();
    kept.retain(|p| reasons.contains_key(p.name.as_str()));
    kept.sort_by(|a, b| (b.timestamp, &b.name).cmp(&(a.timestamp, &a.name)));
    plan.keep = kept
        .into_iter()
        .map(|p| KeptBackup {
            name: p.name.clone(),
            timestamp: p.timestamp,
            reasons: reasons.get(p.name.as_str()).map(|r| r.iter().cloned().collect()).unwrap_or_default(),
        })
        .collect();
    for entry in &eligible {
        if !reasons.contains_key(entry.name.as_str()) {
            plan.delete.push(PlannedDeletion {
                name: entry.name.clone(),
                timestamp: entry.timestamp,
                reason: DeleteReason::Superseded,
            });
        }
    }
    plan.delete.sort_by(|a, b| (b.timestamp, &b.name).cmp(&(a.timestamp, &a.name)));
    plan.in_progress.sort();
    plan.stale.sort();
    plan.future_dated.sort();
    plan
}

/// Parses and de-duplicates entries; what does not parse goes to `plan.unrecognized`.
/// A name listed twice with different completeness counts as incomplete: when in
/// doubt, a backup is neither counted on nor deleted.
fn parse_entries(entries: &[BackupEntry], plan: &mut RetentionPlan) -> BTreeMap<String, Parsed> {
    let mut parsed: BTreeMap<String, Parsed> = BTreeMap::new();
    let mut unrecognized = BTreeMap::new();
    for entry in entries {
        let (base, partial) = match entry.name.strip_suffix(PARTIAL_SUFFIX) {
            Some(base) => (base, true),
            None => (entry.name.as_str(), false),
        };
        match BackupName::parse(base) {
            Ok(name) => {
                let complete = entry.complete && !partial;
                parsed.entry(entry.name.clone()).and_modify(|p| p.complete &= complete).or_insert(Parsed {
                    name: entry.name.clone(),
                    timestamp: name.timestamp,
                    complete,
                });
            }
            Err(e) => {
                unrecognized.insert(entry.name.clone(), e.to_string());
            }
        }
    }
    plan.unrecognized = unrecognized.into_iter().map(|(name, why)| Reported { name, why }).collect();
    parsed
}

fn utc_date(timestamp: Timestamp) -> Date {
    timestamp.to_zoned(TimeZone::UTC).date()
}

/// The oldest day, ISO week (by its Monday) and month inside each window, or `None`
/// for a window of zero periods. A window that reaches before the earliest date jiff
/// represents has no lower bound.
struct Windows {
    anchor: Date,
    first_day: Option<Date>,
    first_monday: Option<Date>,
    first_month: Option<Date>,
}

impl Windows {
    fn new(anchor: Date, policy: RetentionPolicy) -> Self {
        // Span's constructors panic out of range, so the fallible ones: a count too
        // large to represent reaches back to the start of time.
        let back = |count: u32, unit: fn(i64) -> Result<Span, k8s_openapi::jiff::Error>, from: Date| {
            (count > 0).then(|| {
                unit(i64::from(count) - 1).ok().and_then(|span| from.checked_sub(span).ok()).unwrap_or(Date::MIN)
            })
        };
        let monday = monday_of(anchor);
        Self {
            anchor,
            first_day: back(policy.daily, |n| Span::new().try_days(n), anchor),
            first_monday: back(policy.weekly, |n| Span::new().try_weeks(n), monday),
            first_month: back(policy.monthly, |n| Span::new().try_months(n), anchor.first_of_month()),
        }
    }

    fn has_day(&self, date: Date) -> bool {
        self.first_day.is_some_and(|first| date >= first && date <= self.anchor)
    }

    fn has_week(&self, date: Date) -> bool {
        self.first_monday.is_some_and(|first| monday_of(date) >= first && date <= self.anchor)
    }

    fn has_month(&self, date: Date) -> bool {
        self.first_month.is_some_and(|first| date.first_of_month() >= first && date <= self.anchor)
    }
}

fn monday_of(date: Date) -> Date {
    let back = i64::from(date.weekday().to_monday_zero_offset());
    date.checked_sub(Span::new().days(back)).unwrap_or(Date::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(daily: u32, weekly: u32, monthly: u32) -> RetentionPolicy {
        RetentionPolicy { daily, weekly, monthly }
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// Daily backups at 01:00 for `days` days ending on `last` (inclusive).
    fn daily_run(last: &str, days: i64) -> Vec<BackupEntry> {
        let last: Date = last.parse().unwrap();
        (0..days)
            .map(|i| {
                let date = last.checked_sub(Span::new().days(i)).unwrap();
                BackupEntry::complete(format!("{}T010000Z", date.strftime("%Y%m%d")))
            })
            .collect()
    }

    #[test]
    fn the_guides_policy_on_a_year_of_daily_backups_keeps_seven_days_four_weeks_six_months() {
        let entries = daily_run("2026-11-23", 365);
        let plan = plan(&entries, policy(7, 4, 6), ts("2026-11-23T02:00:00Z"));
        let kept = plan.kept_names();
        // 2026-11-23 is a Monday. Days: 17..23 Nov. Weeks (newest of each, Sundays):
        // 23 Nov (its own week), 22 Nov, 15 Nov, 8 Nov. Months: 23 Nov, 31 Oct,
        // 30 Sep, 31 Aug, 31 Jul, 30 Jun.
        let expected = [
            "20261123T010000Z",
            "20261122T010000Z",
            "20261121T010000Z",
            "20261120T010000Z",
            "20261119T010000Z",
            "20261118T010000Z",
            "20261117T010000Z",
            "20261115T010000Z",
            "20261108T010000Z",
            "20261031T010000Z",
            "20260930T010000Z",
            "20260831T010000Z",
            "20260731T010000Z",
            "20260630T010000Z",
        ];
        assert_eq!(kept, expected);
        assert_eq!(plan.delete.len(), 365 - expected.len());
        assert_eq!(plan.anchor.as_deref(), Some("20261123T010000Z"));
        assert_eq!(
            plan.keep[0].reasons,
            [
                KeepReason::Newest,
                KeepReason::Daily("2026-11-23".parse().unwrap()),
                KeepReason::Weekly(2026, 48),
                KeepReason::Monthly(2026, 11)
            ]
        );
        assert!(plan.delete.iter().all(|d| d.reason == DeleteReason::Superseded));
    }

    #[test]
    fn the_newest_of_a_day_wins_and_the_others_go() {
        let entries = [
            BackupEntry::complete("20261123T010000Z"),
            BackupEntry::complete("20261123T130000Z-manual"),
            BackupEntry::complete("20261123T130000Z"),
        ];
        let plan = plan(&entries, policy(1, 0, 0), ts("2026-11-23T14:00:00Z"));
        // Same second: the name orders them, the labelled one sorts after.
        assert_eq!(plan.kept_names(), ["20261123T130000Z-manual"]);
        let deleted: Vec<&str> = plan.delete.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(deleted, ["20261123T130000Z", "20261123T010000Z"]);
    }

    #[test]
    fn periods_count_back_from_the_newest_backup_so_an_outage_does_not_erode_history() {
        let entries = daily_run("2026-01-10", 10);
        let a_year_later = plan(&entries, policy(3, 0, 0), ts("2027-01-10T00:00:00Z"));
        assert_eq!(a_year_later.kept_names(), ["20260110T010000Z", "20260109T010000Z", "20260108T010000Z"]);
    }

    #[test]
    fn gaps_are_periods_too() {
        // Backups on the 20th and the 10th: with 7 daily periods only the 20th is in.
        let entries = [BackupEntry::complete("20261120T010000Z"), BackupEntry::complete("20261110T010000Z")];
        let plan = plan(&entries, policy(7, 0, 0), ts("2026-11-21T00:00:00Z"));
        assert_eq!(plan.kept_names(), ["20261120T010000Z"]);
        assert_eq!(plan.delete[0].name, "20261110T010000Z");
    }

    #[test]
    fn iso_weeks_cross_the_year_boundary() {
        // 2026-12-31 (Thursday) and 2027-01-03 (Sunday) are both in ISO week 2026-W53.
        let entries = [
            BackupEntry::complete("20270104T010000Z"),
            BackupEntry::complete("20270103T010000Z"),
            BackupEntry::complete("20261231T010000Z"),
            BackupEntry::complete("20261227T010000Z"),
        ];
        let plan = plan(&entries, policy(0, 2, 0), ts("2027-01-04T02:00:00Z"));
        assert_eq!(plan.kept_names(), ["20270104T010000Z", "20270103T010000Z"]);
        assert_eq!(plan.keep[1].reasons, [KeepReason::Weekly(2026, 53)]);
    }

    #[test]
    fn incomplete_backups_are_never_counted_nor_deleted_by_default() {
        let entries = [
            BackupEntry::incomplete("20261123T010000Z.partial"),
            BackupEntry::incomplete("20261122T010000Z"),
            BackupEntry::complete("20261121T010000Z"),
            BackupEntry::complete("20261120T010000Z"),
        ];
        let plan = plan(&entries, policy(1, 0, 0), ts("2026-11-23T03:00:00Z"));
        assert_eq!(plan.kept_names(), ["20261121T010000Z"]);
        assert_eq!(plan.in_progress, ["20261123T010000Z.partial"]);
        assert_eq!(plan.stale, ["20261122T010000Z"]);
        let deleted: Vec<&str> = plan.delete.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(deleted, ["20261120T010000Z"]);
    }

    #[test]
    fn stale_incomplete_backups_are_deleted_only_when_asked() {
        let entries = [BackupEntry::incomplete("20261101T010000Z.partial"), BackupEntry::complete("20261123T010000Z")];
        let options = PlanOptions { delete_stale: true, ..PlanOptions::default() };
        let plan = plan_with(&entries, policy(1, 0, 0), ts("2026-11-23T03:00:00Z"), options);
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.delete[0].reason, DeleteReason::StaleIncomplete);
        assert_eq!(plan.delete[0].name, "20261101T010000Z.partial");
    }

    #[test]
    fn a_backup_from_a_clock_that_ran_ahead_is_kept_and_does_not_push_real_ones_out() {
        let mut entries = daily_run("2026-11-23", 10);
        entries.push(BackupEntry::complete("20991231T000000Z"));
        let plan = plan(&entries, policy(3, 0, 0), ts("2026-11-23T02:00:00Z"));
        assert_eq!(plan.future_dated, ["20991231T000000Z"]);
        assert_eq!(plan.anchor.as_deref(), Some("20261123T010000Z"));
        assert_eq!(plan.kept_names(), ["20991231T000000Z", "20261123T010000Z", "20261122T010000Z", "20261121T010000Z"]);
        assert_eq!(plan.keep[0].reasons, [KeepReason::FutureDated]);
    }

    #[test]
    fn odd_names_are_reported_and_never_planned() {
        let entries = [
            BackupEntry::complete("latest"),
            BackupEntry::complete("20261123T010000Z.tmp"),
            BackupEntry::incomplete("notes.partial"),
            BackupEntry::complete("20261123T010000Z"),
        ];
        let plan = plan(&entries, policy(1, 0, 0), ts("2026-11-23T03:00:00Z"));
        let odd: Vec<&str> = plan.unrecognized.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(odd, ["20261123T010000Z.tmp", "latest", "notes.partial"]);
        assert!(plan.unrecognized.iter().all(|r| !r.why.is_empty()));
        assert_eq!(plan.kept_names(), ["20261123T010000Z"]);
        assert!(plan.deletes_nothing());
    }

    #[test]
    fn a_name_listed_twice_with_different_states_counts_as_incomplete() {
        let entries = [
            BackupEntry::complete("20261123T010000Z"),
            BackupEntry::incomplete("20261123T010000Z"),
            BackupEntry::complete("20261122T010000Z"),
            BackupEntry::complete("20261122T010000Z"),
        ];
        let plan = plan(&entries, policy(7, 0, 0), ts("2026-11-23T03:00:00Z"));
        assert_eq!(plan.kept_names(), ["20261122T010000Z"]);
        assert_eq!(plan.in_progress, ["20261123T010000Z"]);
    }

    #[test]
    fn a_partial_that_claims_to_be_complete_is_not_believed() {
        let entries = [BackupEntry::complete("20261123T010000Z.partial")];
        let plan = plan(&entries, policy(7, 4, 6), ts("2026-11-23T03:00:00Z"));
        assert!(plan.keep.is_empty());
        assert_eq!(plan.in_progress, ["20261123T010000Z.partial"]);
    }

    #[test]
    fn huge_counts_keep_everything_without_overflow() {
        let entries = daily_run("2026-11-23", 40);
        let plan = plan(&entries, policy(u32::MAX, u32::MAX, u32::MAX), ts("2026-11-23T03:00:00Z"));
        assert_eq!(plan.keep.len(), 40);
        assert!(plan.deletes_nothing());
    }

    #[test]
    fn nothing_to_plan_is_an_empty_plan() {
        let plan = plan(&[], policy(7, 4, 6), ts("2026-11-23T03:00:00Z"));
        assert_eq!(plan, RetentionPlan::default());
    }
}
