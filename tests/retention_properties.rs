//! Properties of the retention planner, checked on generated backup sets (duplicates
//! in one period, gaps, clock skew, odd names, partials), against a reference
//! grandfather-father-son computation written independently: integer period numbers
//! from Unix seconds instead of calendar arithmetic.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use referral_operator::backup::name::BackupName;
use referral_operator::backup::retention::{
    BackupEntry, DeleteReason, PlanOptions, RetentionPlan, RetentionPolicy, plan_with,
};

const DAY: i64 = 86_400;
/// 2024-01-01T00:00:00Z: generated backups fall in the three years after it.
const START: i64 = 1_704_067_200;

fn stamp(seconds: i64) -> String {
    Timestamp::from_second(seconds).unwrap().strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// (year, month) of a day number, by Howard Hinnant's `civil_from_days`.
fn civil_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// Period numbers of a Unix time: day, Monday-based week, month.
fn periods(seconds: i64) -> [i64; 3] {
    let day = seconds.div_euclid(DAY);
    // 1970-01-01 was a Thursday; the Monday before it is day -3.
    let week = (day + 3).div_euclid(7);
    let (year, month) = civil_month(day);
    [day, week, year * 12 + month - 1]
}

/// The reference: among complete, parseable, not-future backups, keep one when, for
/// some kind with a count n > 0, its period is among the n periods ending at the
/// newest backup's and no other backup in that period is newer (time, then name).
/// Future-dated complete backups are kept too.
fn reference_keep(entries: &[BackupEntry], policy: RetentionPolicy, now: i64, tolerance: i64) -> BTreeSet<String> {
    let mut by_name: BTreeMap<String, (i64, bool)> = BTreeMap::new();
    for entry in entries {
        let Ok(name) = BackupName::parse(&entry.name) else { continue };
        let slot = by_name.entry(entry.name.clone()).or_insert((name.timestamp.as_second(), true));
        slot.1 &= entry.complete;
    }
    let complete: Vec<(String, i64)> = by_name.into_iter().filter(|(_, (_, c))| *c).map(|(n, (t, _))| (n, t)).collect();
    let mut keep: BTreeSet<String> =
        complete.iter().filter(|(_, t)| *t > now + tolerance).map(|(n, _)| n.clone()).collect();
    let eligible: Vec<&(String, i64)> = complete.iter().filter(|(_, t)| *t <= now + tolerance).collect();
    let Some(newest) = eligible.iter().max_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0))) else { return keep };
    let anchor = periods(newest.1);
    let counts = [policy.daily, policy.weekly, policy.monthly];
    for candidate in &eligible {
        let mine = periods(candidate.1);
        for kind in 0..3 {
            let count = i64::from(counts[kind]);
            let in_window = count > 0 && mine[kind] > anchor[kind] - count && mine[kind] <= anchor[kind];
            let newest_in_period = eligible
                .iter()
                .filter(|other| periods(other.1)[kind] == mine[kind])
                .all(|other| (other.1, &other.0) <= (candidate.1, &candidate.0));
            if in_window && newest_in_period {
                keep.insert(candidate.0.clone());
            }
        }
    }
    keep.insert(newest.0.clone());
    keep
}

fn kept(plan: &RetentionPlan) -> BTreeSet<String> {
    plan.keep.iter().map(|k| k.name.clone()).collect()
}

fn options() -> PlanOptions {
    PlanOptions::default()
}

const ODD_NAMES: [&str; 8] =
    ["latest", "lost+found", "notes.txt", "20261123T010000", "20261301T000000Z", "x.partial", "2026", ""];

/// A backup set: mostly parseable names clustered in a few hundred days (so several
/// share a day, a week, a month) and some odd ones, each complete or not.
fn entries() -> impl Strategy<Value = Vec<BackupEntry>> {
    let backup = (0i64..3 * 365, prop::sample::select(vec![0i64, 3600, 3601, 46_800, 86_399]), 0u8..10, any::<bool>())
        .prop_map(|(day, second, kind, complete)| {
            let base = stamp(START + day * DAY + second);
            match kind {
                0 => BackupEntry { name: format!("{base}.partial"), complete: false },
                1 => BackupEntry { name: format!("{base}-manual"), complete },
                2 => BackupEntry { name: base, complete: false },
                _ => BackupEntry { name: base, complete: true },
            }
        });
    let odd = (prop::sample::select(ODD_NAMES.to_vec()), any::<bool>())
        .prop_map(|(name, complete)| BackupEntry { name: name.to_string(), complete });
    prop::collection::vec(prop_oneof![9 => backup, 1 => odd], 0..80)
}

fn policy() -> impl Strategy<Value = RetentionPolicy> {
    (0u32..12, 0u32..8, 0u32..14).prop_map(|(daily, weekly, monthly)| RetentionPolicy { daily, weekly, monthly })
}

/// "Now": anywhere from inside the generated range (so some backups are in the
/// future: clock skew) to a year after it.
fn now() -> impl Strategy<Value = i64> {
    (START + 200 * DAY)..(START + 4 * 365 * DAY)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_kept_set_is_exactly_the_reference_gfs_set(entries in entries(), policy in policy(), now in now()) {
        let at = Timestamp::from_second(now).unwrap();
        let plan = plan_with(&entries, policy, at, options());
        let tolerance = options().future_tolerance.as_secs();
        prop_assert_eq!(kept(&plan), reference_keep(&entries, policy, now, tolerance));
    }

    #[test]
    fn planning_the_kept_set_again_deletes_nothing(entries in entries(), policy in policy(), now in now()) {
        let at = Timestamp::from_second(now).unwrap();
        let first = plan_with(&entries, policy, at, options());
        let doomed: BTreeSet<&str> = first.delete.iter().map(|d| d.name.as_str()).collect();
        let survivors: Vec<BackupEntry> = entries.iter().filter(|e| !doomed.contains(e.name.as_str())).cloned().collect();
        let second = plan_with(&survivors, policy, at, options());
        prop_assert!(second.delete.is_empty(), "second pass deletes {:?}", second.delete);
        prop_assert_eq!(kept(&second), kept(&first));
    }

    #[test]
    fn the_newest_complete_backup_is_always_kept(entries in entries(), policy in policy(), now in now()) {
        let at = Timestamp::from_second(now).unwrap();
        let plan = plan_with(&entries, policy, at, options());
        let newest = entries
            .iter()
            .filter(|e| {
                e.complete
                    && BackupName::parse(&e.name).is_ok()
                    && entries.iter().all(|o| o.name != e.name || o.complete)
            })
            .max_by_key(|e| (BackupName::parse(&e.name).map(|n| n.timestamp).ok(), e.name.clone()));
        if let Some(newest) = newest {
            prop_assert!(kept(&plan).contains(&newest.name), "{} deleted", newest.name);
        }
    }

    #[test]
    fn only_complete_recognized_backups_are_ever_deleted(entries in entries(), policy in policy(), now in now()) {
        let at = Timestamp::from_second(now).unwrap();
        let plan = plan_with(&entries, policy, at, options());
        for deletion in &plan.delete {
            prop_assert_eq!(deletion.reason, DeleteReason::Superseded);
            prop_assert!(BackupName::parse(&deletion.name).is_ok(), "deletes odd name {}", deletion.name);
            prop_assert!(
                entries.iter().filter(|e| e.name == deletion.name).all(|e| e.complete),
                "deletes incomplete {}", deletion.name
            );
            prop_assert!(deletion.timestamp <= at.checked_add(options().future_tolerance).unwrap());
        }
        let keep = kept(&plan);
        prop_assert!(plan.delete.iter().all(|d| !keep.contains(&d.name)));
        // Every complete, recognized backup is either kept or deleted: none is forgotten.
        let decided: BTreeSet<String> = keep.iter().cloned().chain(plan.delete.iter().map(|d| d.name.clone())).collect();
        for entry in &entries {
            let clean = entries.iter().filter(|e| e.name == entry.name).all(|e| e.complete);
            if clean && BackupName::parse(&entry.name).is_ok() {
                prop_assert!(decided.contains(&entry.name), "{} neither kept nor deleted", entry.name);
            }
        }
    }

    #[test]
    fn input_order_does_not_matter(entries in entries(), policy in policy(), now in now(), seed in any::<u64>()) {
        let at = Timestamp::from_second(now).unwrap();
        let mut shuffled = entries.clone();
        // A deterministic shuffle from the seed.
        let n = shuffled.len();
        for i in (1..n).rev() {
            let j = (seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i as u64) % (i as u64 + 1)) as usize;
            shuffled.swap(i, j);
        }
        prop_assert_eq!(plan_with(&entries, policy, at, options()), plan_with(&shuffled, policy, at, options()));
    }

    #[test]
    fn keeping_more_periods_never_deletes_more(entries in entries(), policy in policy(), now in now(), extra in 0u32..5) {
        let at = Timestamp::from_second(now).unwrap();
        let bigger = RetentionPolicy { daily: policy.daily + extra, weekly: policy.weekly + extra, monthly: policy.monthly + extra };
        let small = kept(&plan_with(&entries, policy, at, options()));
        let large = kept(&plan_with(&entries, bigger, at, options()));
        prop_assert!(small.is_subset(&large), "{:?} not within {:?}", small, large);
    }
}

#[test]
fn the_reference_agrees_with_the_calendar_on_known_dates() {
    // 2026-11-23 is a Monday in ISO week 48; 2026-11-22 a Sunday in week 47.
    let monday = periods(Timestamp::from_second(1_795_395_600).unwrap().as_second()); // 2026-11-23T01:00Z
    let sunday = periods(1_795_395_600 - DAY);
    assert_eq!(monday[1], sunday[1] + 1, "a new ISO week starts on Monday");
    assert_eq!(civil_month(1_795_395_600 / DAY), (2026, 11));
    assert_eq!(stamp(1_795_395_600), "20261123T010000Z");
}
