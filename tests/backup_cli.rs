//! `referral-operator backup ...` run as a process on real temporary directories,
//! with the exact flags the backup CronJob passes.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use k8s_openapi::jiff::{Span, Timestamp};
use serde_json::Value;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_referral-operator"))
}

fn run(args: &[&str]) -> Output {
    binary().args(args).env_remove("POD_NAMESPACE").output().expect("run referral-operator")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn gzip() -> Vec<u8> {
    vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// What the dump steps leave behind: archives, the database name, the RDB.
fn write_run(dir: &Path, folder: &str) {
    let path = dir.join(folder);
    fs::create_dir_all(&path).unwrap();
    fs::write(path.join("mongodb-referrals.archive.gz"), gzip()).unwrap();
    fs::write(path.join("mongodb-database.txt"), "neurolov").unwrap();
    fs::write(path.join("redis.rdb"), b"REDIS0011").unwrap();
}

/// Complete backups at 01:00 UTC for each of the last `days` days before today.
fn history(dir: &Path, days: i64) -> Vec<String> {
    let today = Timestamp::now().to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
    let mut names = Vec::new();
    for back in 1..=days {
        let date = today.checked_sub(Span::new().days(back)).unwrap();
        let name = format!("{}T010000Z", date.strftime("%Y%m%d"));
        write_run(dir, &format!("{name}.partial"));
        fs::write(dir.join("name"), &name).unwrap();
        let out = run(&finalize_args(dir, 366, 0, 0));
        assert!(out.status.success(), "{}", text(&out));
        names.push(name);
    }
    names
}

fn finalize_args(dir: &Path, daily: u32, weekly: u32, monthly: u32) -> Vec<&'static str> {
    let dir: &'static str = Box::leak(dir.display().to_string().into_boxed_str());
    let name_file: &'static str = Box::leak(format!("{dir}/name").into_boxed_str());
    let [d, w, m] = [daily, weekly, monthly].map(|n| &*Box::leak(n.to_string().into_boxed_str()));
    vec![
        "backup",
        "finalize",
        "--dir",
        dir,
        "--name-file",
        name_file,
        "--daily",
        d,
        "--weekly",
        w,
        "--monthly",
        m,
        "--expect-redis",
    ]
}

fn folders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn finalize_completes_the_run_then_prunes_with_the_cronjobs_flags() {
    let dir = tempfile::tempdir().unwrap();
    let names = history(dir.path(), 10);
    assert_eq!(folders(dir.path()).len(), 11, "ten backups and the name file");

    // Today's run, finalized with a three-day retention: today and the two days before.
    // A second past midnight: always today, and never far enough ahead to count as future.
    let date = Timestamp::now().to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
    let today = format!("{}T000001Z", date.strftime("%Y%m%d"));
    write_run(dir.path(), &format!("{today}.partial"));
    fs::write(dir.path().join("name"), format!("{today}\n")).unwrap();
    let out = run(&finalize_args(dir.path(), 3, 0, 0));
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.contains(&format!("backup {today} is complete")), "{printed}");
    assert!(printed.contains("deleted 8 backups"), "{printed}");
    let mut expected = vec![names[1].clone(), names[0].clone(), today.clone(), "name".to_string()];
    expected.sort();
    assert_eq!(folders(dir.path()), expected);
    assert!(dir.path().join(&today).join("complete.json").is_file());
}

#[test]
fn finalize_without_the_redis_snapshot_it_was_promised_fails_and_keeps_the_partial() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), "20261123T010000Z.partial");
    fs::remove_file(dir.path().join("20261123T010000Z.partial/redis.rdb")).unwrap();
    fs::write(dir.path().join("name"), "20261123T010000Z").unwrap();
    let out = run(&finalize_args(dir.path(), 7, 4, 6));
    assert!(!out.status.success());
    assert!(text(&out).contains("redis.rdb is missing"), "{}", text(&out));
    assert!(dir.path().join("20261123T010000Z.partial").is_dir());
}

#[test]
fn finalize_with_a_system_but_no_namespace_says_so_after_completing_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), "20261123T010000Z.partial");
    fs::write(dir.path().join("name"), "20261123T010000Z").unwrap();
    let mut args = finalize_args(dir.path(), 7, 4, 6);
    args.extend(["--system", "main"]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("POD_NAMESPACE"), "{}", text(&out));
    assert!(dir.path().join("20261123T010000Z/complete.json").is_file(), "the backup itself is complete");
}

#[test]
fn prune_dry_run_prints_the_plan_and_deletes_nothing_then_prune_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let names = history(dir.path(), 5);
    write_run(dir.path(), "20200101T000000Z.partial");
    fs::create_dir(dir.path().join("latest")).unwrap();
    let before = folders(dir.path());
    let base =
        ["backup", "prune", "--dir", dir.path().to_str().unwrap(), "--daily", "2", "--weekly", "0", "--monthly", "0"];

    let mut dry: Vec<&str> = base.to_vec();
    dry.push("--dry-run");
    let out = run(&dry);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.contains(&format!("keep    {}", names[0])), "{printed}");
    assert!(printed.contains(&format!("delete  {}", names[4])), "{printed}");
    assert!(printed.contains("stale   20200101T000000Z.partial"), "{printed}");
    assert!(printed.contains("odd     latest"), "{printed}");
    assert!(printed.contains("dry run: nothing deleted"), "{printed}");
    assert_eq!(folders(dir.path()), before);

    let mut json: Vec<&str> = dry.clone();
    json.extend(["-o", "json"]);
    let out = run(&json);
    let plan: Value = serde_json::from_slice(&out.stdout).expect("JSON plan");
    assert_eq!(plan["plan"]["delete"].as_array().unwrap().len(), 3);
    assert_eq!(plan["plan"]["anchor"], names[0].as_str());
    assert!(plan["applied"].is_null());

    let out = run(&base);
    assert!(out.status.success(), "{}", text(&out));
    let left = folders(dir.path());
    assert!(left.contains(&names[0]) && left.contains(&names[1]));
    assert!(!left.contains(&names[2]) && !left.contains(&names[4]));
    assert!(left.contains(&"20200101T000000Z.partial".to_string()), "stale partials stay without --delete-stale");
    assert!(left.contains(&"latest".to_string()));

    let mut stale: Vec<&str> = base.to_vec();
    stale.push("--delete-stale");
    assert!(run(&stale).status.success());
    assert!(!folders(dir.path()).contains(&"20200101T000000Z.partial".to_string()));
}

#[test]
fn list_and_verify_report_each_backup() {
    let dir = tempfile::tempdir().unwrap();
    let names = history(dir.path(), 2);
    write_run(dir.path(), "20261123T020000Z.partial");
    let out = run(&["backup", "list", "--dir", dir.path().to_str().unwrap(), "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<(String, String)> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap().to_string(), b["state"].as_str().unwrap().to_string()))
        .collect();
    assert!(states.contains(&(names[0].clone(), "complete".into())), "{states:?}");
    assert!(states.contains(&("20261123T020000Z.partial".into(), "partial".into())), "{states:?}");

    let out = run(&["backup", "verify", "--dir", dir.path().to_str().unwrap(), "--name", &names[0]]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("a Redis snapshot"), "{}", text(&out));
    let out = run(&["backup", "verify", "--dir", dir.path().to_str().unwrap(), "--name", "20261123T020000Z"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("did not finish"), "{}", text(&out));
}

#[test]
fn a_policy_that_keeps_nothing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "backup",
        "prune",
        "--dir",
        dir.path().to_str().unwrap(),
        "--daily",
        "0",
        "--weekly",
        "0",
        "--monthly",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("raise at least one"), "{}", text(&out));
}

/// The drill refuses a scratch database that is the production one before it looks
/// at MongoDB at all: the URI here names a server that does not exist, and the only
/// message is the refusal.
#[test]
fn the_drill_refuses_the_production_database_before_contacting_mongodb() {
    let dir = tempfile::tempdir().unwrap();
    for scratch in ["neurolov", "NeuroLov"] {
        let out = binary()
            .args(["backup", "drill", "--database", "neurolov", "--scratch-database", scratch, "--dir"])
            .arg(dir.path())
            .env("MONGODB_URI", "mongodb://nowhere.invalid:1/?serverSelectionTimeoutMS=100")
            .env_remove("POD_NAMESPACE")
            .output()
            .unwrap();
        let printed = text(&out);
        assert_eq!(out.status.code(), Some(1), "{printed}");
        assert!(printed.contains("is the production database"), "{printed}");
        assert!(!printed.contains("nowhere.invalid"), "MongoDB was contacted: {printed}");
    }
}

/// A failed command leaves its reason where Kubernetes reads it (the pod's termination
/// message, which the operator copies into the ReferralRestore condition and
/// `BackupHealthy`): one line, the same words as the log, no credential.
#[test]
fn a_failure_is_written_to_the_termination_log_without_secrets_and_only_where_one_exists() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("termination-log");
    fs::write(&log, "").unwrap();
    let restore = |log: &Path| {
        binary()
            .args(["backup", "restore", "--dir", dir.path().to_str().unwrap(), "--name", "20261123T010000Z"])
            .args(["--database", "neurolov"])
            .env("MONGODB_URI", "mongodb://admin:hunter2-Secret@127.0.0.1:1/neurolov")
            .env("REFOP_TERMINATION_LOG", log)
            .output()
            .unwrap()
    };
    let out = restore(&log);
    assert!(!out.status.success(), "{}", text(&out));
    let said = fs::read_to_string(&log).unwrap();
    assert!(said.contains("20261123T010000Z"), "names the backup: {said:?}");
    assert!(!said.contains('\n') && !said.is_empty() && said.len() <= 1024, "{said:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&said), "the log says the same: {stderr} / {said}");
    assert!(!said.contains("hunter2") && !said.contains("admin"), "{said:?}");

    // Outside a pod there is no termination log, and none is created.
    let absent = dir.path().join("absent");
    assert!(!restore(&absent).status.success());
    assert!(!absent.exists());
}
