//! What `kubectl referral status` prints: a summary of one ReferralSystem for a
//! person at an 80-column terminal, or a stable JSON document for scripts.
//!
//! Pure: the object and the current time in, text out. No client, no clock, no
//! terminal detection here, so every layout is tested on fixtures.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::crd::ReferralSystem;
use crate::crd::status::{DrillResult, IndexState, ReferralSystemStatus};

/// Every line of the human summary fits this many columns.
pub const WIDTH: usize = 80;
/// Chain-check examples shown before "... and N more".
const MAX_EXAMPLES: usize = 5;
/// Widest condition type and reason columns; longer values are cut with "~".
const MAX_TYPE_COLUMN: usize = 24;
const MAX_REASON_COLUMN: usize = 30;

/// The lines being built, each at most [`WIDTH`] characters.
#[derive(Default)]
struct Lines(Vec<String>);

impl Lines {
    fn blank(&mut self) {
        self.0.push(String::new());
    }

    /// `first` then `text`, wrapped at word boundaries; continuation lines start with
    /// `indent` spaces. A word too long for a line of its own is split.
    fn wrapped(&mut self, first: &str, indent: usize, text: &str) {
        let pad = " ".repeat(indent);
        let mut line = first.to_string();
        // Whether `line` holds no word of `text` yet.
        let mut fresh = true;
        for word in text.split_whitespace() {
            let mut chars: Vec<char> = word.chars().collect();
            while !chars.is_empty() {
                let used = line.chars().count();
                let separator = usize::from(!fresh);
                let room = WIDTH.saturating_sub(used + separator);
                if chars.len() <= room {
                    if !fresh {
                        line.push(' ');
                    }
                    line.extend(chars.drain(..));
                    fresh = false;
                } else if !fresh && chars.len() <= WIDTH.saturating_sub(indent) {
                    self.0.push(std::mem::replace(&mut line, pad.clone()));
                    fresh = true;
                } else if room == 0 && fresh {
                    // Only a prefix as wide as the terminal gets here: overflow
                    // rather than loop.
                    line.extend(chars.drain(..));
                    fresh = false;
                } else {
                    if room > 0 {
                        if !fresh {
                            line.push(' ');
                        }
                        line.extend(chars.drain(..room));
                    }
                    self.0.push(std::mem::replace(&mut line, pad.clone()));
                    fresh = true;
                }
            }
        }
        if !fresh || text.split_whitespace().next().is_none() {
            self.0.push(line.trim_end().to_string());
        }
    }

    fn text(self) -> String {
        let mut out = self.0.join("\n");
        out.push('\n');
        out
    }
}

/// Cuts `text` to `max` characters, marking the cut with `~`.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
        out.push('~');
        out
    }
}

/// "45s", "12m", "5h", "3d": how long ago `then` was.
pub fn age(then: &Time, now: Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(then.0.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// RFC 3339 at whole seconds, with how long ago.
fn when(then: &Time, now: Timestamp) -> String {
    let at = Timestamp::from_second(then.0.as_second()).unwrap_or(then.0);
    format!("{at} ({} ago)", age(then, now))
}

/// Bytes as a person reads them: binary units, one decimal.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Whether a condition is in its good state: True, except for ReconciliationPaused.
fn is_good(condition: &Condition) -> bool {
    if condition.type_ == "ReconciliationPaused" { condition.status == "False" } else { condition.status == "True" }
}

fn find<'a>(status: &'a ReferralSystemStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn condition_brief(condition: Option<&Condition>) -> String {
    match condition {
        Some(c) => format!("{}: {}, {}", c.type_, c.status, c.reason),
        None => "not reported".to_string(),
    }
}

/// The human summary of `system` at time `now`; every line fits [`WIDTH`] columns.
pub fn human(system: &ReferralSystem, now: Timestamp) -> String {
    let mut lines = Lines::default();
    let namespace = system.namespace().unwrap_or_default();
    let name = system.name_any();
    lines.wrapped("ReferralSystem ", 2, &format!("{namespace}/{name}"));
    let generation = system.metadata.generation;
    let Some(status) = &system.status else {
        lines.wrapped(
            "  Status:      ",
            15,
            &format!(
                "none yet: the operator has not reconciled this system (is it running, and does it watch namespace {namespace}?)"
            ),
        );
        paused_line(&mut lines, system);
        return lines.text();
    };

    let health = match find(status, "Ready") {
        Some(ready) => format!("Ready {} ({}): {}", ready.status, ready.reason, ready.message),
        None => "Ready not reported yet".to_string(),
    };
    lines.wrapped("  Health:      ", 15, &health);
    let observed = match (generation, status.observed_generation) {
        (Some(g), Some(o)) if g == o => format!("{g} (status is current)"),
        (Some(g), Some(o)) => format!("{g}, status describes {o}: the operator has not caught up"),
        (Some(g), None) => format!("{g}, not observed yet"),
        (None, _) => "unknown".to_string(),
    };
    lines.wrapped("  Generation:  ", 15, &observed);
    paused_line(&mut lines, system);

    conditions(&mut lines, status, now);
    workers(&mut lines, status);
    dependencies(&mut lines, system, status);
    indexes(&mut lines, status);
    chain_check(&mut lines, status, now);
    backups(&mut lines, system, status, now);
    lines.text()
}

fn paused_line(lines: &mut Lines, system: &ReferralSystem) {
    let state = match (system.spec.paused, system.spec.stopped) {
        (true, _) => "yes: the operator does not change this system's children",
        (false, true) => "no, but stopped: every worker is scaled to zero",
        (false, false) => "no",
    };
    lines.wrapped("  Paused:      ", 15, state);
}

fn conditions(lines: &mut Lines, status: &ReferralSystemStatus, now: Timestamp) {
    lines.blank();
    if status.conditions.is_empty() {
        lines.wrapped("Conditions: ", 2, "none reported");
        return;
    }
    lines.wrapped("Conditions:", 2, "");
    // Ready first: it is the answer; the others are the reasons.
    let mut ordered: Vec<&Condition> = status.conditions.iter().filter(|c| c.type_ == "Ready").collect();
    ordered.extend(status.conditions.iter().filter(|c| c.type_ != "Ready"));
    let type_width = ordered.iter().map(|c| c.type_.chars().count()).max().unwrap_or(4).clamp(4, MAX_TYPE_COLUMN);
    let reason_width = ordered.iter().map(|c| c.reason.chars().count()).max().unwrap_or(6).clamp(6, MAX_REASON_COLUMN);
    lines.0.push(format!("  {:type_width$}  {:7}  {:reason_width$}  AGE", "TYPE", "STATUS", "REASON"));
    for condition in ordered {
        lines.0.push(format!(
            "  {:type_width$}  {:7}  {:reason_width$}  {}",
            cut(&condition.type_, type_width),
            cut(&condition.status, 7),
            cut(&condition.reason, reason_width),
            age(&condition.last_transition_time, now),
        ));
        if !is_good(condition) && !condition.message.is_empty() {
            lines.wrapped("      ", 6, &condition.message);
        }
    }
}

fn workers(lines: &mut Lines, status: &ReferralSystemStatus) {
    lines.blank();
    let total = status.workers_ready.as_deref().unwrap_or("not reported");
    lines.wrapped("Workers: ", 2, &format!("{total} pods ready"));
    if !status.workers.is_empty() {
        let width = status.workers.iter().map(|w| w.name.chars().count()).max().unwrap_or(4).clamp(4, 60);
        lines.0.push(format!("  {:width$}  READY", "NAME"));
        for worker in &status.workers {
            lines.0.push(format!("  {:width$}  {}/{}", cut(&worker.name, width), worker.ready, worker.desired));
        }
    }
    if !status.resources_not_ready.is_empty() {
        lines.wrapped("  Not ready: ", 4, &status.resources_not_ready.join(", "));
    }
}

fn dependencies(lines: &mut Lines, system: &ReferralSystem, status: &ReferralSystemStatus) {
    let redis = &system.spec.redis;
    let kind = match (&redis.managed, &redis.external) {
        (Some(_), _) => "managed by the operator".to_string(),
        (None, Some(external)) => {
            let host = external.host.clone().unwrap_or_else(|| external.cluster_nodes.join(","));
            format!("external {host}:{}{}", external.port, if external.tls { " (TLS)" } else { "" })
        }
        (None, None) => "not configured".to_string(),
    };
    lines.wrapped("Redis:   ", 2, &format!("{kind}; {}", condition_brief(find(status, "RedisReady"))));
    lines.wrapped(
        "MongoDB: ",
        2,
        &format!("database {}; {}", system.spec.mongodb.database, condition_brief(find(status, "MongoReachable"))),
    );
}

fn indexes(lines: &mut Lines, status: &ReferralSystemStatus) {
    lines.blank();
    let summary = match (&status.index_summary, status.indexes.is_empty()) {
        (Some(summary), _) => summary.clone(),
        (None, true) => "not checked yet".to_string(),
        (None, false) => format!("{} declared", status.indexes.len()),
    };
    lines.wrapped("Indexes: ", 2, &summary);
    for index in &status.indexes {
        let state = match index.state {
            IndexState::Present | IndexState::Created => continue,
            IndexState::Missing => "Missing",
            IndexState::Conflict => "Conflict",
        };
        lines.wrapped("  ", 4, &format!("{}.{}: {state}", index.collection, index.name));
        if let Some(message) = &index.message {
            lines.wrapped("      ", 6, message);
        }
    }
}

fn chain_check(lines: &mut Lines, status: &ReferralSystemStatus, now: Timestamp) {
    let Some(check) = &status.chain_check else {
        lines.wrapped("Chain check: ", 2, "not run yet");
        return;
    };
    let last = check.last_run.as_ref().map(|t| when(t, now)).unwrap_or_else(|| "never finished".into());
    let summary = check.summary.clone().unwrap_or_else(|| "no summary".into());
    lines.wrapped("Chain check: ", 2, &format!("{summary}, last run {last}"));
    lines.wrapped(
        "  ",
        2,
        &format!(
            "users {}, cycles {}, too deep {}, orphans {}, self-referrals {}, malformed {}, bad referral records {}",
            check.users,
            check.cycles,
            check.too_deep,
            check.orphans,
            check.self_referrals,
            check.malformed,
            check.bad_referral_records
        ),
    );
    if !check.examples.is_empty() {
        lines.wrapped("  Examples:", 4, "");
        for example in check.examples.iter().take(MAX_EXAMPLES) {
            lines.wrapped("    ", 6, example);
        }
        if check.examples.len() > MAX_EXAMPLES {
            lines.wrapped("    ", 6, &format!("... and {} more", check.examples.len() - MAX_EXAMPLES));
        }
    }
}

fn backups(lines: &mut Lines, system: &ReferralSystem, status: &ReferralSystemStatus, now: Timestamp) {
    let text = match &status.backup {
        None => format!("none reported yet (schedule {})", system.spec.backup.schedule),
        Some(backup) => {
            let last = backup.last_success.as_ref().map(|t| when(t, now)).unwrap_or_else(|| "none complete".into());
            format!("last success {last}; {} kept, {}", backup.kept, size(backup.size_bytes))
        }
    };
    lines.wrapped("Backups: ", 2, &text);
    if let Some(drill) = status.backup.as_ref().and_then(|b| b.last_verified_restore.as_ref()) {
        let backup = drill.backup.as_deref().unwrap_or("no backup");
        let text = match drill.result {
            DrillResult::Succeeded => format!("{backup} restored and checked {}", when(&drill.time, now)),
            DrillResult::Failed => format!("FAILED {} on {backup}: {}", when(&drill.time, now), drill.message),
        };
        lines.wrapped("  Restore drill: ", 4, &text);
    }
}

/// The JSON document of `status -o json`: identity, generations, paused, and the
/// status exactly as the API server holds it.
pub fn json(system: &ReferralSystem) -> Value {
    let ready = system.status.as_ref().and_then(|s| find(s, "Ready"));
    json!({
        "apiVersion": "referral.dev/v1alpha1",
        "kind": "ReferralSystemSummary",
        "name": system.name_any(),
        "namespace": system.namespace(),
        "generation": system.metadata.generation,
        "observedGeneration": system.status.as_ref().and_then(|s| s.observed_generation),
        "paused": system.spec.paused,
        "stopped": system.spec.stopped,
        "ready": ready.map(|c| json!({ "status": c.status, "reason": c.reason, "message": c.message })),
        "status": system.status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn system(yaml: &str) -> ReferralSystem {
        crate::yaml::from_str(yaml).unwrap()
    }

    const SPEC: &str = "
apiVersion: referral.dev/v1alpha1
kind: ReferralSystem
metadata: {name: main, namespace: referrals, generation: 3}
spec:
  image: example/referral-service:1.4.2
  workers: [{name: reward-processor, replicas: 2}, {name: api, replicas: 2}]
  mongodb: {uriSecretRef: {name: referral-mongo, key: uri}, database: neurolov}
  redis: {managed: {}}
";

    fn healthy() -> ReferralSystem {
        system(&format!(
            "{SPEC}status:
  observedGeneration: 3
  workersReady: 4/4
  workers: [{{name: reward-processor, desired: 2, ready: 2}}, {{name: api, desired: 2, ready: 2}}]
  indexSummary: 6/6 present
  conditions:
  - {{type: SpecValid, status: 'True', reason: Valid, message: the spec passed validation, lastTransitionTime: '2025-06-01T10:00:00Z'}}
  - {{type: ReconciliationPaused, status: 'False', reason: Reconciling, message: children are kept in line, lastTransitionTime: '2025-06-01T10:00:00Z'}}
  - {{type: RedisReady, status: 'True', reason: Reachable, message: PONG, lastTransitionTime: '2025-06-03T09:00:00Z'}}
  - {{type: MongoReachable, status: 'True', reason: Reachable, message: ping ok, lastTransitionTime: '2025-06-03T09:00:00Z'}}
  - {{type: Ready, status: 'True', reason: Ready, message: generation 3 is in place, lastTransitionTime: '2025-06-03T09:55:00Z'}}
  chainCheck: {{lastRun: '2025-06-01T03:00:12Z', summary: OK, users: 1000, cycles: 0, tooDeep: 0, orphans: 0, selfReferrals: 0, malformed: 0, badReferralRecords: 0}}
  backup: {{lastSuccess: '2025-06-03T01:00:40Z', kept: 12, sizeBytes: 3435973837}}
"
        ))
    }

    const NOW: &str = "2025-06-03T10:00:00Z";

    #[test]
    fn a_healthy_system_reads_as_expected() {
        let expected = "\
ReferralSystem referrals/main
  Health:      Ready True (Ready): generation 3 is in place
  Generation:  3 (status is current)
  Paused:      no

Conditions:
  TYPE                  STATUS   REASON       AGE
  Ready                 True     Ready        5m
  SpecValid             True     Valid        2d
  ReconciliationPaused  False    Reconciling  2d
  RedisReady            True     Reachable    60m
  MongoReachable        True     Reachable    60m

Workers: 4/4 pods ready
  NAME              READY
  reward-processor  2/2
  api               2/2
Redis:   managed by the operator; RedisReady: True, Reachable
MongoDB: database neurolov; MongoReachable: True, Reachable

Indexes: 6/6 present
Chain check: OK, last run 2025-06-01T03:00:12Z (2d ago)
  users 1000, cycles 0, too deep 0, orphans 0, self-referrals 0, malformed 0,
  bad referral records 0
Backups: last success 2025-06-03T01:00:40Z (8h ago); 12 kept, 3.2 GiB
";
        assert_eq!(human(&healthy(), at(NOW)), expected);
    }

    fn assert_fits(text: &str) {
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "{} columns: {line:?}\n{text}", line.chars().count());
            assert_eq!(line, line.trim_end(), "trailing blanks in {line:?}");
        }
    }

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn long_messages_wrap_at_word_boundaries_with_every_word_kept() {
        let message = "waiting for main-reward-processor 1/2 ready; main-api 0/2 ready; the rollout of the \
                       new template is in progress and the Deployment controller has not yet reported that \
                       every updated pod is available, which usually means image pulls or readiness probes";
        let mut broken = healthy();
        let status = broken.status.as_mut().unwrap();
        status.conditions[4].status = "False".into();
        status.conditions[4].reason = "Progressing".into();
        status.conditions[4].message = format!("WorkersAvailable: {message}");
        status.conditions.push(Condition {
            type_: "WorkersAvailable".into(),
            status: "False".into(),
            reason: "Progressing".into(),
            message: message.into(),
            observed_generation: Some(3),
            last_transition_time: Time(at("2025-06-03T09:59:30Z")),
        });
        let text = human(&broken, at(NOW));
        assert_fits(&text);
        // The message shows under its condition, continued with the same indent.
        let start = text.find("  WorkersAvailable      False    Progressing  30s\n").expect(&text);
        let block: Vec<&str> = text[start..].lines().skip(1).take_while(|l| l.starts_with("      ")).collect();
        assert!(block.len() >= 3, "{text}");
        assert_eq!(words(&block.join(" ")), words(message));
        // The health line wraps too, under its value column.
        assert!(text.contains("\n  Health:      Ready False (Progressing): WorkersAvailable: waiting for\n"), "{text}");
        assert!(text.contains("\n               main-reward-processor 1/2 ready;"), "{text}");
    }

    #[test]
    fn a_word_longer_than_a_line_is_split_not_overflowed() {
        let mut system = healthy();
        let token = "x".repeat(200);
        system.status.as_mut().unwrap().chain_check.as_mut().unwrap().examples =
            vec![format!("orphan: {token}"), "cycle: u1 -> u2 -> u1".into()];
        let text = human(&system, at(NOW));
        assert_fits(&text);
        let mut without = system.clone();
        without.status.as_mut().unwrap().chain_check.as_mut().unwrap().examples[0] = "orphan:".into();
        let baseline = human(&without, at(NOW)).matches('x').count();
        assert_eq!(text.matches('x').count() - baseline, 200, "every character of the token is kept\n{text}");
        assert!(text.contains("\n    cycle: u1 -> u2 -> u1\n"), "{text}");
    }

    #[test]
    fn a_degraded_system_shows_why_with_examples_and_offending_indexes() {
        let mut system = healthy();
        let status = system.status.as_mut().unwrap();
        status.conditions[2] = Condition {
            type_: "RedisReady".into(),
            status: "False".into(),
            reason: "AuthenticationFailed".into(),
            message: "Redis at main-redis.referrals.svc:6379 refused the password (WRONGPASS)".into(),
            observed_generation: Some(3),
            last_transition_time: Time(at("2025-06-03T09:58:00Z")),
        };
        status.resources_not_ready = vec!["StatefulSet/main-redis".into()];
        status.index_summary = Some("5/6 (1 conflict)".into());
        status.indexes = crate::yaml::from_str(
            "[{collection: users, name: referralCode_1, state: Present},
              {collection: referrals, name: code_1_status_1, state: Conflict,
               message: 'an index named code_1_status_1 exists with keys {code: 1} only'}]",
        )
        .unwrap();
        let check = status.chain_check.as_mut().unwrap();
        check.summary = Some("9 violations".into());
        check.cycles = 2;
        check.orphans = 7;
        check.examples = (1..=8).map(|i| format!("orphan: user u{i} refers to missing u{}", i + 100)).collect();
        let text = human(&system, at(NOW));
        assert_fits(&text);
        assert!(text.contains("  RedisReady            False    AuthenticationFailed  2m\n"), "{text}");
        assert!(text.contains("      Redis at main-redis.referrals.svc:6379 refused the password (WRONGPASS)\n"));
        assert!(text.contains("Redis:   managed by the operator; RedisReady: False, AuthenticationFailed\n"));
        assert!(text.contains("  Not ready: StatefulSet/main-redis\n"), "{text}");
        assert!(text.contains("Indexes: 5/6 (1 conflict)\n  referrals.code_1_status_1: Conflict\n"), "{text}");
        assert!(!text.contains("referralCode_1"), "present indexes are not listed\n{text}");
        assert!(text.contains("Chain check: 9 violations, last run 2025-06-01T03:00:12Z (2d ago)\n"), "{text}");
        assert!(text.contains("    orphan: user u5 refers to missing u105\n    ... and 3 more\n"), "{text}");
        assert!(!text.contains("u6 "), "{text}");
        // A good condition's message is noise and is not shown.
        assert!(!text.contains("the spec passed validation"), "{text}");
    }

    #[test]
    fn a_system_without_status_says_what_to_check() {
        let text = human(&system(SPEC), at(NOW));
        assert_fits(&text);
        assert_eq!(
            text,
            "\
ReferralSystem referrals/main
  Status:      none yet: the operator has not reconciled this system (is it
               running, and does it watch namespace referrals?)
  Paused:      no
"
        );
    }

    #[test]
    fn paused_stale_and_unreported_parts_are_named() {
        let mut system = healthy();
        system.spec.paused = true;
        system.metadata.generation = Some(4);
        let status = system.status.as_mut().unwrap();
        status.chain_check = None;
        status.backup = None;
        status.index_summary = None;
        let text = human(&system, at(NOW));
        assert_fits(&text);
        assert!(text.contains("  Generation:  4, status describes 3: the operator has not caught up\n"), "{text}");
        assert!(text.contains("  Paused:      yes: the operator does not change this system's children\n"));
        assert!(text.contains("Indexes: not checked yet\nChain check: not run yet\n"), "{text}");
        assert!(text.contains("Backups: none reported yet (schedule 0 1 * * *)\n"), "{text}");
    }

    #[test]
    fn the_last_restore_drill_is_shown_under_the_backups() {
        let mut system = healthy();
        let backup = system.status.as_mut().unwrap().backup.as_mut().unwrap();
        backup.last_verified_restore = Some(crate::crd::status::VerifiedRestoreStatus {
            time: Time(at("2025-06-03T04:10:00Z")),
            backup: Some("20250603T010000Z".into()),
            result: DrillResult::Failed,
            message: "neurolov/users.bson.gz: SHA-256 differs".into(),
            source: None,
            scratch_database: "neurolov_drill".into(),
            documents: 0,
            chains: None,
            verified_backup: None,
        });
        let text = human(&system, at(NOW));
        assert_fits(&text);
        assert!(text.contains("  Restore drill: FAILED 2025-06-03T04:10:00Z"), "{text}");
        assert!(text.contains("users.bson.gz"), "{text}");
    }

    #[test]
    fn long_names_and_reasons_are_cut_to_fit() {
        let mut system = healthy();
        system.metadata.name = Some("n".repeat(45));
        system.metadata.namespace = Some("a-namespace-with-a-rather-long-name-for-a-team".into());
        let status = system.status.as_mut().unwrap();
        status.conditions[3].type_ = "AnUnusuallyLongConditionTypeName".into();
        status.conditions[3].reason = "AReasonThatIsFarTooLongForTheReasonColumn".into();
        status.conditions[3].status = "False".into();
        status.workers[0].name = "w".repeat(63);
        let text = human(&system, at(NOW));
        assert_fits(&text);
        assert!(text.contains("AnUnusuallyLongConditio~  False    AReasonThatIsFarTooLongForThe~  60m"), "{text}");
    }

    #[test]
    fn json_carries_the_status_as_stored() {
        let value = json(&healthy());
        assert_eq!(value["name"], "main");
        assert_eq!(value["namespace"], "referrals");
        assert_eq!(value["generation"], 3);
        assert_eq!(value["observedGeneration"], 3);
        assert_eq!(value["paused"], false);
        assert_eq!(value["ready"]["status"], "True");
        assert_eq!(value["status"]["chainCheck"]["users"], 1000);
        assert_eq!(value["status"]["backup"]["sizeBytes"], 3_435_973_837u64);
        let none = json(&system(SPEC));
        assert!(none["status"].is_null() && none["ready"].is_null(), "{none}");
    }

    #[test]
    fn sizes_and_ages_read_naturally() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3_435_973_837), "3.2 GiB");
        let now = at(NOW);
        let ago = |s: i64| age(&Time(Timestamp::from_second(now.as_second() - s).unwrap()), now);
        assert_eq!(
            [ago(5), ago(119), ago(120), ago(7199), ago(7200), ago(172_799), ago(172_800)],
            ["5s", "119s", "2m", "119m", "2h", "47h", "2d"]
        );
        assert_eq!(ago(-30), "0s", "a clock behind the server's never shows negative ages");
    }
}
