//! `referral-operator backup ...`: the backup volume's commands. The backup Job runs
//! `backup finalize` after mongodump and the Redis snapshot; the restore Job runs
//! `backup verify` before it touches a database; a person runs `list` and `prune`.
//!
//! The filesystem work is [`crate::backup::store`] and the decisions are
//! [`crate::backup::retention`]; this module parses flags, prints, and writes
//! `status.backup` of the ReferralSystem (by server-side apply on the status
//! subresource, as the status writer [`StatusWriter::Backup`], which owns that field
//! and no other).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use serde_json::{Value, json};

use crate::backup::retention::{PlanOptions, RetentionPlan, RetentionPolicy, plan_with};
use crate::backup::store::{self, ApplyReport, FinalizeOptions, Listing, StoreError};
use crate::crd::ReferralSystem;
use crate::crd::status::{BackupStatus, ReferralSystemStatus, StatusWriter};
use crate::reconcilers::backup::EXIT_STATUS_NOT_WRITTEN;

use super::native_backup::{self, DumpArgs, RestoreArgs, S3Args};
use super::termination;

/// Longest list of backup names written into status.
const MAX_LISTED: usize = 100;
/// Longest list of warnings written into status.
const MAX_WARNINGS: usize = 10;

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// The retention flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Days with a kept backup.
    #[arg(long)]
    pub daily: u32,
    /// ISO weeks with a kept backup.
    #[arg(long)]
    pub weekly: u32,
    /// Months with a kept backup.
    #[arg(long)]
    pub monthly: u32,
}

impl RetentionArgs {
    fn policy(&self) -> Result<RetentionPolicy, String> {
        let policy = RetentionPolicy { daily: self.daily, weekly: self.weekly, monthly: self.monthly };
        if policy.daily == 0 && policy.weekly == 0 && policy.monthly == 0 {
            // Only the newest backup would survive: almost certainly a mistake.
            return Err("--daily, --weekly and --monthly are all 0: raise at least one above 0".into());
        }
        Ok(policy)
    }
}

/// `backup` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// List the backups in a backup directory (or bucket): complete, in progress, stale, odd.
    List {
        /// The backup directory.
        #[arg(long, default_value = "/backups")]
        dir: PathBuf,
        #[command(flatten)]
        s3: S3Args,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Delete the complete backups the retention does not keep (grandfather-father-son
    /// over UTC days, ISO weeks and months). Prints the plan; --dry-run stops there.
    Prune {
        #[arg(long, default_value = "/backups")]
        dir: PathBuf,
        #[command(flatten)]
        s3: S3Args,
        #[command(flatten)]
        retention: RetentionArgs,
        /// Print the plan and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete incomplete backups older than the stale threshold (7 hours:
        /// the backup Job's 6-hour deadline plus one). Off by default.
        #[arg(long)]
        delete_stale: bool,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Mark a run complete (check, sync, rename NAME.partial to NAME, write the
    /// marker last), apply the retention, and report to the ReferralSystem's status.
    Finalize {
        #[arg(long, default_value = "/backups")]
        dir: PathBuf,
        /// File holding the run's name (written by the dump step).
        #[arg(long)]
        name_file: PathBuf,
        #[command(flatten)]
        retention: RetentionArgs,
        /// The run was to include a Redis snapshot: refuse to finalize without it.
        #[arg(long)]
        expect_redis: bool,
        /// Write the summary into this ReferralSystem's status.backup.
        #[arg(long)]
        system: Option<String>,
        /// Namespace of the ReferralSystem.
        #[arg(long, env = "POD_NAMESPACE")]
        namespace: Option<String>,
        /// The run was also dumped into this bucket: upload the rest (the Redis
        /// snapshot), write the manifest there last, and prune the bucket too.
        #[command(flatten)]
        s3: S3Args,
    },
    /// Check that a backup is complete and its files match its manifest: sizes and
    /// checksums, and for a native dump every document decoded and counted (what a
    /// restore runs first).
    Verify {
        #[arg(long, default_value = "/backups")]
        dir: PathBuf,
        #[command(flatten)]
        s3: S3Args,
        /// The backup's name, e.g. 20261123T010000Z.
        #[arg(long)]
        name: String,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Dump a MongoDB database with the driver into mongodump's directory layout
    /// (gzip, per collection a .bson.gz and a .metadata.json.gz), on the backup volume,
    /// in object storage, or both at once, with a manifest written last.
    Dump(DumpArgs),
    /// Restore a native dump (or a `mongodump --out` directory) into a database: the
    /// whole backup is verified first, each collection dropped and restored, its
    /// indexes created and its documents counted.
    Restore(RestoreArgs),
    /// The restore drill: restore the newest complete backup into a scratch database
    /// (never the production one), count it against the manifest, run the chain check
    /// on it, drop it, and report to status.backup.lastVerifiedRestore (--system).
    /// Exit 0 passed, 1 failed, 2 could not report.
    Drill(super::restore_drill::DrillArgs),
}

/// Runs a `backup` subcommand.
pub fn run(command: BackupCommand) -> ExitCode {
    match command {
        BackupCommand::List { s3, output, .. } if s3.bucket.is_some() => native_backup::run_list(&s3, output),
        BackupCommand::List { dir, s3: _, output } => list(&dir, output),
        BackupCommand::Prune { s3, retention, dry_run, delete_stale, output, .. } if s3.bucket.is_some() => {
            match retention.policy() {
                Ok(policy) => native_backup::run_prune(&s3, policy, dry_run, delete_stale, output),
                Err(e) => {
                    termination::fail(&e);
                    ExitCode::from(2)
                }
            }
        }
        BackupCommand::Prune { dir, s3: _, retention, dry_run, delete_stale, output } => {
            prune(&dir, &retention, dry_run, delete_stale, output)
        }
        BackupCommand::Dump(args) => native_backup::run_dump(args),
        BackupCommand::Restore(args) => native_backup::run_restore(args),
        BackupCommand::Drill(args) => super::restore_drill::run_drill(args),
        BackupCommand::Finalize { dir, name_file, retention, expect_redis, system, namespace, s3 } => {
            finalize(&dir, &name_file, &retention, expect_redis, system.as_deref(), namespace.as_deref(), &s3)
        }
        BackupCommand::Verify { dir, s3, name, output } => {
            if let Some(code) = native_backup::run_verify(&dir, &name, &s3, output) {
                return code;
            }
            verify_archives(&dir, &name, output)
        }
    }
}

/// `backup verify` of a Mongodump-method backup: every file's size and checksum.
fn verify_archives(dir: &Path, name: &str, output: Output) -> ExitCode {
    match store::verify(dir, name) {
        Ok(manifest) if output == Output::Json => {
            println!("{}", json!({"name": name, "manifest": manifest}));
            ExitCode::SUCCESS
        }
        Ok(manifest) => {
            println!(
                "backup {} is complete: {} files, {} bytes, collections [{}]{}{}",
                manifest.name,
                manifest.files.len(),
                manifest.size_bytes,
                manifest.collections.join(", "),
                if manifest.whole_database { ", the whole database" } else { "" },
                if manifest.redis { ", a Redis snapshot" } else { "" }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            termination::fail(&e);
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

fn list(dir: &Path, output: Output) -> ExitCode {
    let listing = match store::list(dir) {
        Ok(listing) => listing,
        Err(e) => {
            termination::fail(&e);
            return ExitCode::FAILURE;
        }
    };
    print_listing(&listing, output);
    ExitCode::SUCCESS
}

/// Prints a listing, of the volume or of a bucket.
pub(crate) fn print_listing(listing: &Listing, output: Output) {
    match output {
        Output::Json => {
            let rows: Vec<Value> = listing
                .backups
                .iter()
                .map(|b| {
                    json!({
                        "name": b.dir_name,
                        "state": state_word(&b.state),
                        "sizeBytes": b.size_bytes,
                        "manifest": b.manifest(),
                    })
                })
                .collect();
            println!("{}", json!({"backups": rows, "others": listing.others}));
        }
        Output::Text => {
            println!("{:<40} {:<12} {:>14}", "NAME", "STATE", "BYTES");
            for b in listing.backups.iter().rev() {
                println!("{:<40} {:<12} {:>14}", b.dir_name, state_word(&b.state), b.size_bytes);
            }
            for other in &listing.others {
                println!("{other:<40} {:<12} {:>14}", "not-a-backup", "-");
            }
        }
    }
}

fn state_word(state: &store::StoredState) -> &'static str {
    match state {
        store::StoredState::Complete(_) => "complete",
        store::StoredState::Partial => "partial",
        store::StoredState::Unmarked => "unmarked",
        store::StoredState::MarkerUnreadable(_) => "bad-marker",
    }
}

pub(crate) fn plan_for(listing: &Listing, policy: RetentionPolicy, delete_stale: bool, at: Timestamp) -> RetentionPlan {
    plan_with(&listing.entries(), policy, at, PlanOptions { delete_stale, ..PlanOptions::default() })
}

fn prune(dir: &Path, retention: &RetentionArgs, dry_run: bool, delete_stale: bool, output: Output) -> ExitCode {
    let policy = match retention.policy() {
        Ok(policy) => policy,
        Err(e) => {
            termination::fail(&e);
            return ExitCode::from(2);
        }
    };
    let listing = match store::list(dir) {
        Ok(listing) => listing,
        Err(e) => {
            termination::fail(&e);
            return ExitCode::FAILURE;
        }
    };
    let plan = plan_for(&listing, policy, delete_stale, now());
    let report = if dry_run { None } else { Some(store::apply(dir, &plan)) };
    print_prune(dir, policy, dry_run, &listing, &plan, report.as_ref(), output);
    match report {
        Some(report) if !report.failed.is_empty() => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

/// Prints a retention plan and what was done, of the volume or of a bucket.
pub(crate) fn print_prune(
    dir: &Path,
    policy: RetentionPolicy,
    dry_run: bool,
    listing: &Listing,
    plan: &RetentionPlan,
    report: Option<&ApplyReport>,
    output: Output,
) {
    match output {
        Output::Json => {
            println!("{}", json!({"dryRun": dry_run, "plan": plan, "applied": report, "others": listing.others}))
        }
        Output::Text => print!("{}", plan_text(dir, policy, plan, &listing.others, report)),
    }
}

/// The plan (and what was done) for a person.
pub fn plan_text(
    dir: &Path,
    policy: RetentionPolicy,
    plan: &RetentionPlan,
    others: &[String],
    report: Option<&ApplyReport>,
) -> String {
    let mut out = format!(
        "retention of {} (daily {}, weekly {}, monthly {}), counted back from {}\n",
        dir.display(),
        policy.daily,
        policy.weekly,
        policy.monthly,
        plan.anchor.as_deref().unwrap_or("nothing: no complete backup")
    );
    for kept in &plan.keep {
        let reasons: Vec<String> = kept.reasons.iter().map(ToString::to_string).collect();
        out.push_str(&format!("keep    {:<40} {}\n", kept.name, reasons.join(", ")));
    }
    for deletion in &plan.delete {
        let why = match deletion.reason {
            crate::backup::retention::DeleteReason::Superseded => "no period keeps it",
            crate::backup::retention::DeleteReason::StaleIncomplete => "stale incomplete backup",
        };
        out.push_str(&format!("delete  {:<40} {why}\n", deletion.name));
    }
    for name in &plan.in_progress {
        out.push_str(&format!("running {name:<40} incomplete and recent: a run in progress, left alone\n"));
    }
    for name in &plan.stale {
        out.push_str(&format!("stale   {name:<40} incomplete and older than 7h: left alone unless --delete-stale\n"));
    }
    for name in &plan.future_dated {
        out.push_str(&format!("future  {name:<40} dated in the future (a clock ran ahead): kept, check it by hand\n"));
    }
    for odd in &plan.unrecognized {
        out.push_str(&format!("odd     {:<40} {}: never touched\n", odd.name, odd.why));
    }
    for other in others {
        out.push_str(&format!("odd     {other:<40} not a folder: never touched\n"));
    }
    match report {
        None => out.push_str("dry run: nothing deleted\n"),
        Some(report) => {
            let freed: u64 = report.deleted.iter().map(|d| d.size_bytes).sum();
            out.push_str(&format!("deleted {} backups, {freed} bytes freed\n", report.deleted.len()));
            for failure in &report.failed {
                out.push_str(&format!("FAILED  {:<40} {}\n", failure.name, failure.error));
            }
        }
    }
    out
}

/// The summary `finalize` writes into `status.backup`, from the folder as it is
/// after pruning.
pub fn backup_status(listing: &Listing, plan: &RetentionPlan, report: &ApplyReport, at: Timestamp) -> BackupStatus {
    let mut complete: Vec<&store::StoredBackup> = listing.backups.iter().filter(|b| b.is_complete()).collect();
    complete.sort_by(|a, b| b.dir_name.cmp(&a.dir_name));
    let latest = plan.anchor.as_ref().and_then(|name| listing.get(name));
    let mut warnings = Vec::new();
    for failure in &report.failed {
        warnings.push(format!("could not delete {}: {}", failure.name, failure.error));
    }
    for name in &plan.stale {
        warnings.push(format!(
            "{name} is an incomplete backup older than 7h (a failed run); delete it by hand or with backup prune --delete-stale"
        ));
    }
    for name in &plan.future_dated {
        warnings.push(format!("{name} is dated in the future (a clock ran ahead); it is kept until removed by hand"));
    }
    for odd in &plan.unrecognized {
        warnings.push(format!("{} is not a backup: {}", odd.name, odd.why));
    }
    for other in &listing.others {
        warnings.push(format!("{other} in the backup volume is not a backup folder"));
    }
    if warnings.len() > MAX_WARNINGS {
        let more = warnings.len() - (MAX_WARNINGS - 1);
        warnings.truncate(MAX_WARNINGS - 1);
        warnings.push(format!("... and {more} more: run backup list"));
    }
    BackupStatus {
        last_success: latest.and_then(|b| b.manifest()).map(|m| Time(m.completed_at)),
        kept: u32::try_from(complete.len()).unwrap_or(u32::MAX),
        size_bytes: complete.iter().map(|b| b.size_bytes).sum(),
        latest: latest.map(|b| b.dir_name.clone()),
        backups: complete.iter().take(MAX_LISTED).map(|b| b.dir_name.clone()).collect(),
        incomplete: u32::try_from(listing.backups.len() - complete.len()).unwrap_or(u32::MAX),
        warnings,
        last_report: Some(Time(at)),
        // The drill's field: the backup Job never writes it (StatusWriter carves it out).
        last_verified_restore: None,
    }
}

fn finalize(
    dir: &Path,
    name_file: &Path,
    retention: &RetentionArgs,
    expect_redis: bool,
    system: Option<&str>,
    namespace: Option<&str>,
    s3: &S3Args,
) -> ExitCode {
    let policy = match retention.policy() {
        Ok(policy) => policy,
        Err(e) => {
            termination::fail(&e);
            return ExitCode::from(2);
        }
    };
    let name = match std::fs::read_to_string(name_file) {
        Ok(text) => text.trim().to_string(),
        Err(e) => {
            termination::fail(format!("cannot read the run's name from {}: {e}", name_file.display()));
            return ExitCode::FAILURE;
        }
    };
    let at = now();
    let manifest = match store::finalize(dir, &name, &FinalizeOptions { expect_redis, completed_at: at }) {
        Ok(manifest) => {
            println!("backup {} is complete: {} bytes", manifest.name, manifest.size_bytes);
            manifest
        }
        Err(e) => {
            termination::fail(&e);
            return ExitCode::FAILURE;
        }
    };
    // The copy in the bucket: a failure there fails the Job (BackupFailed), after
    // status has recorded the complete backup on the volume.
    let bucket_failure = if s3.bucket.is_some() {
        match native_backup::finish_in_bucket(s3, dir, &manifest, policy, at) {
            Ok(text) => {
                print!("{text}");
                None
            }
            Err(e) => {
                termination::fail(&e);
                Some(e)
            }
        }
    } else {
        None
    };
    // From here on the backup is safe on disk; what follows only tidies and reports.
    let (status, pruned) = match prune_after_finalize(dir, policy, at) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("warning: the backup is complete but retention could not run: {e}");
            let status = BackupStatus {
                warnings: vec![format!("retention could not run: {e}")],
                last_report: Some(Time(at)),
                ..BackupStatus::default()
            };
            (status, String::new())
        }
    };
    print!("{pruned}");
    let mut status = status;
    if let Some(e) = &bucket_failure {
        status.warnings.push(format!("the copy in object storage is not complete: {e}"));
    }
    let done = if bucket_failure.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    let Some(system) = system else { return done };
    let Some(namespace) = namespace else {
        termination::fail("--system needs the namespace: set --namespace or POD_NAMESPACE");
        return ExitCode::from(EXIT_STATUS_NOT_WRITTEN);
    };
    match write_status(namespace, system, &status) {
        Ok(()) => {
            println!("status.backup of {namespace}/{system} updated");
            done
        }
        Err(e) => {
            eprintln!(
                "error: backup {name} is complete, but status.backup of {namespace}/{system} was not written: {e}"
            );
            ExitCode::from(EXIT_STATUS_NOT_WRITTEN)
        }
    }
}

fn prune_after_finalize(
    dir: &Path,
    policy: RetentionPolicy,
    at: Timestamp,
) -> Result<(BackupStatus, String), StoreError> {
    let listing = store::list(dir)?;
    let plan = plan_for(&listing, policy, false, at);
    let report = store::apply(dir, &plan);
    let text = plan_text(dir, policy, &plan, &listing.others, Some(&report));
    let after = store::list(dir)?;
    let replanned = plan_for(&after, policy, false, at);
    Ok((backup_status(&after, &replanned, &report, at), text))
}

/// Why status could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StatusWriteError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot build a Kubernetes client (in-cluster or KUBECONFIG): {0}")]
    Client(kube::Error),
    #[error("patching the status of ReferralSystem {namespace}/{name} failed after {attempts} attempts: {source}")]
    Patch { namespace: String, name: String, attempts: u32, source: kube::Error },
}

fn write_status(namespace: &str, name: &str, status: &BackupStatus) -> Result<(), StatusWriteError> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StatusWriteError::Runtime)?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(StatusWriteError::Client)?;
        let api = Api::<ReferralSystem>::namespaced(client, namespace);
        const ATTEMPTS: u32 = 4;
        let mut attempt = 1;
        loop {
            // Applied whole: what the apply leaves out (a warning that went away) is
            // removed.
            let applied = ReferralSystemStatus { backup: Some(status.clone()), ..ReferralSystemStatus::default() };
            match super::status::apply(&api, name, StatusWriter::Backup, &applied).await {
                Ok(()) => return Ok(()),
                // Forbidden or NotFound will not change by waiting.
                Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 || attempt >= ATTEMPTS => {
                    return Err(StatusWriteError::Patch {
                        namespace: namespace.into(),
                        name: name.into(),
                        attempts: attempt,
                        source: kube::Error::Api(e),
                    });
                }
                Err(source) if attempt >= ATTEMPTS => {
                    return Err(StatusWriteError::Patch {
                        namespace: namespace.into(),
                        name: name.into(),
                        attempts: attempt,
                        source,
                    });
                }
                Err(error) => {
                    eprintln!("warning: status write attempt {attempt} failed, retrying: {error}");
                    tokio::time::sleep(Duration::from_secs(2u64 << attempt)).await;
                    attempt += 1;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::retention::{BackupEntry, plan};

    #[test]
    fn the_status_is_applied_whole_and_clears_what_is_gone() {
        let backup = BackupStatus { kept: 2, size_bytes: 10, ..BackupStatus::default() };
        let status = ReferralSystemStatus { backup: Some(backup), ..ReferralSystemStatus::default() };
        let body = StatusWriter::Backup.apply_body(&status);
        assert_eq!(body["status"].as_object().unwrap().keys().collect::<Vec<_>>(), ["backup"]);
        assert_eq!(body["status"]["backup"], json!({"kept": 2, "sizeBytes": 10}));
        let earlier = BackupStatus { warnings: vec!["stale".into()], ..status.backup.clone().unwrap() };
        let earlier = ReferralSystemStatus { backup: Some(earlier), ..ReferralSystemStatus::default() };
        assert_eq!(
            StatusWriter::Backup.leftovers(Some(&earlier), &status),
            Some(json!({"status": {"backup": {"warnings": null}}}))
        );
    }

    #[test]
    fn the_plan_text_says_what_happens_to_each_folder() {
        let entries = [
            BackupEntry::complete("20261123T010000Z"),
            BackupEntry::complete("20261122T010000Z"),
            BackupEntry::incomplete("20261123T020000Z.partial"),
            BackupEntry::complete("junk"),
        ];
        let policy = RetentionPolicy { daily: 1, weekly: 0, monthly: 0 };
        let plan = plan(&entries, policy, "2026-11-23T03:00:00Z".parse().unwrap());
        let text = plan_text(Path::new("/backups"), policy, &plan, &["x.txt".to_string()], None);
        assert!(text.contains("keep    20261123T010000Z"), "{text}");
        assert!(text.contains("delete  20261122T010000Z"), "{text}");
        assert!(text.contains("running 20261123T020000Z.partial"), "{text}");
        assert!(text.contains("odd     junk"), "{text}");
        assert!(text.contains("odd     x.txt"), "{text}");
        assert!(text.ends_with("dry run: nothing deleted\n"), "{text}");
    }

    #[test]
    fn an_all_zero_policy_is_refused() {
        let args = RetentionArgs { daily: 0, weekly: 0, monthly: 0 };
        assert!(args.policy().is_err());
    }
}
