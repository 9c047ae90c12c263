//! `backup dump` and `backup restore` (the native dump and restore through the Rust
//! driver, in mongodump's directory layout), the deep `backup verify`, and the
//! object-storage side of `backup list|prune|verify` (`--s3-bucket`).
//!
//! The work is in [`crate::backup::dump`], [`crate::backup::restore`] and
//! [`crate::backup::object`]; this module reads flags and the environment, runs it
//! and prints. The MongoDB URI and the S3 keys come from environment variables,
//! never from flags, and every message passes through a [`Redactor`] that knows them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use crate::backup::dump::{DumpRequest, dump};
use crate::backup::manifest::{DUMP_SUMMARY_FILE, DumpSummary};
use crate::backup::name::{BackupName, PARTIAL_SUFFIX, name_at};
use crate::backup::object::{Credentials, Encryption, ObjectError, ObjectSettings, ObjectTarget, Redactor};
use crate::backup::restore::{RestorePlan, RestoreReport, VerifyReport, restore, verify};
use crate::backup::retention::RetentionPolicy;
use crate::backup::store::{self, FinalizeOptions, Manifest, ManifestFile};
use crate::backup::stream::StreamDigest;
use crate::backup::target::{BackupSource, FileSink, TeeFile, VolumeFolder};

use super::backup::Output;
use super::mongo_client::client_with_env_tls;

/// The dump's gzip level by default: the fastest. On referral documents level 1
/// compresses 6.5 times at about 210 MB/s of one core, level 6 (mongodump's) 9.8
/// times at 80 MB/s, which makes the dump slower than the cursor it reads
/// (docs/backup-restore.md#benchmark).
pub const DEFAULT_GZIP_LEVEL: u32 = 1;
/// How long the driver waits to find a server before giving up.
pub(super) const MONGO_TIMEOUT: Duration = Duration::from_secs(30);

/// Where backups are in object storage. Any of these turns a command to object
/// storage; credentials come from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct S3Args {
    /// Bucket of an S3-compatible object store: work there instead of (or, for dump,
    /// as well as) the backup directory.
    #[arg(long = "s3-bucket", env = "BACKUP_S3_BUCKET")]
    pub bucket: Option<String>,
    /// Endpoint of an S3-compatible service (https://host:port); AWS S3 when absent.
    #[arg(long = "s3-endpoint", env = "BACKUP_S3_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Key prefix the backups are under.
    #[arg(long = "s3-prefix", env = "BACKUP_S3_PREFIX", default_value = "")]
    pub prefix: String,
    /// The bucket's region.
    #[arg(long = "s3-region", env = "BACKUP_S3_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Server-side encryption: AES256 (SSE-S3) or aws:kms (SSE-KMS, with --s3-kms-key-id).
    #[arg(long = "s3-sse", env = "BACKUP_S3_SSE")]
    pub sse: Option<String>,
    /// KMS key for --s3-sse aws:kms.
    #[arg(long = "s3-kms-key-id", env = "BACKUP_S3_KMS_KEY_ID")]
    pub kms_key_id: Option<String>,
}

impl S3Args {
    /// The settings, when a bucket is given.
    pub fn settings(&self) -> Result<Option<ObjectSettings>, ObjectError> {
        let Some(bucket) = &self.bucket else { return Ok(None) };
        let encryption = match (self.sse.as_deref(), &self.kms_key_id) {
            (None, None) => None,
            (Some("AES256"), None) => Some(Encryption::S3),
            (Some("aws:kms"), Some(key_id)) => Some(Encryption::Kms { key_id: key_id.clone() }),
            (Some("aws:kms"), None) => {
                return Err(ObjectError::Settings { why: "--s3-sse aws:kms needs --s3-kms-key-id".into() });
            }
            (None | Some("AES256"), Some(_)) => {
                return Err(ObjectError::Settings { why: "--s3-kms-key-id goes with --s3-sse aws:kms".into() });
            }
            (Some(other), _) => {
                return Err(ObjectError::Settings { why: format!("--s3-sse {other:?}: use AES256 or aws:kms") });
            }
        };
        let settings = ObjectSettings {
            endpoint: self.endpoint.clone(),
            bucket: bucket.clone(),
            prefix: self.prefix.trim_end_matches('/').to_string(),
            region: self.region.clone(),
            encryption,
        };
        settings.check()?;
        Ok(Some(settings))
    }

    /// Connects when a bucket is given (inside the runtime).
    pub fn connect(&self) -> Result<Option<ObjectTarget>, ObjectError> {
        match self.settings()? {
            None => Ok(None),
            Some(settings) => ObjectTarget::connect(&settings, &Credentials::from_env()?).map(Some),
        }
    }
}

/// Flags of `backup dump`.
#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// The backup directory: the run is written to NAME.partial there and finalized.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub s3: S3Args,
    /// The database to dump.
    #[arg(long, env = "MONGODB_DATABASE")]
    pub database: String,
    /// A collection (or view) to dump; repeat for several. Every collection when absent.
    #[arg(long = "collection")]
    pub collections: Vec<String>,
    /// Environment variable holding the MongoDB connection string.
    #[arg(long, default_value = "MONGODB_URI")]
    pub uri_env: String,
    /// Write plain .bson and .metadata.json files instead of gzip (mongodump without --gzip).
    #[arg(long, conflicts_with = "gzip_level")]
    pub no_gzip: bool,
    /// gzip level, 1 (fastest) to 9 (smallest); mongodump uses 6. The files are the
    /// same format at any level.
    #[arg(long, default_value_t = DEFAULT_GZIP_LEVEL, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
    /// Label appended to the backup's name (manual, pre-upgrade).
    #[arg(long, env = "BACKUP_LABEL")]
    pub label: Option<String>,
    /// Also write the run's name into this file (for the steps that follow).
    #[arg(long)]
    pub name_file: Option<PathBuf>,
    /// Leave the run without its manifest, for `backup finalize` to complete (after
    /// the Redis snapshot).
    #[arg(long)]
    pub leave_open: bool,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
}

/// Flags of `backup restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup directory holding the backup --name.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The backup to restore, e.g. 20261123T010000Z (in --dir or in the bucket).
    #[arg(long)]
    pub name: Option<String>,
    /// A `mongodump --out` directory (no manifest of ours) instead of a backup.
    #[arg(long, conflicts_with_all = ["dir", "name"])]
    pub from_dump: Option<PathBuf>,
    /// With --from-dump: the database folder to read (default: the only one there).
    #[arg(long, requires = "from_dump")]
    pub from_database: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// The database to restore into (collections of the backup are dropped there first).
    #[arg(long, env = "MONGODB_DATABASE")]
    pub database: String,
    /// Restore only this collection; repeat for several. Every one in the backup when absent.
    #[arg(long = "collection")]
    pub collections: Vec<String>,
    /// Environment variable holding the MongoDB connection string.
    #[arg(long, default_value = "MONGODB_URI")]
    pub uri_env: String,
    /// The backup must come from the bucket (a ReferralRestore with source
    /// ObjectStorage): refuse when no bucket is configured instead of looking on the
    /// volume.
    #[arg(long)]
    pub from_bucket: bool,
    /// After the restore, copy the backup's Redis snapshot (if it has one) to
    /// DIR/NAME/redis.rdb, for the Redis restore that follows.
    #[arg(long, requires = "name")]
    pub redis_to: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
}

/// A runtime for one command: two workers (the cursor and the uploads) beside the
/// blocking threads that compress and decode.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// A redactor for the connection string: the whole URI and its password.
pub fn uri_redactor(uri: &str) -> Vec<String> {
    let mut secrets = vec![uri.to_string()];
    if let Some(userinfo) = uri.split_once("://").and_then(|(_, rest)| rest.split_once('@')).map(|(u, _)| u) {
        secrets.push(userinfo.to_string());
        if let Some((_, password)) = userinfo.split_once(':') {
            secrets.push(password.to_string());
        }
    }
    secrets
}

pub(super) fn read_uri(var: &str) -> Result<String, String> {
    std::env::var(var)
        .map_err(|_| format!("environment variable {var} is not set: it must hold the MongoDB connection string"))
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    super::termination::fail(message);
    ExitCode::FAILURE
}

fn rate(count: f64, seconds: f64) -> f64 {
    if seconds > 0.0 { count / seconds } else { 0.0 }
}

/// Runs a command that reports only success or a message, as the process's exit.
fn run_to_exit(command: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => return fail(e),
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Runs `backup dump`.
pub fn run_dump(args: DumpArgs) -> ExitCode {
    run_to_exit(dump_command(&args))
}

async fn dump_command(args: &DumpArgs) -> Result<(), String> {
    let target = args.s3.connect().map_err(|e| e.to_string())?;
    if args.dir.is_none() && target.is_none() {
        return Err("say where the backup goes: --dir, --s3-bucket, or both".into());
    }
    let uri = read_uri(&args.uri_env)?;
    let mut secrets = uri_redactor(&uri);
    if target.is_some() {
        secrets.extend(target_secrets());
    }
    let redactor = Redactor::new(secrets);
    let name = name_at(Timestamp::now(), args.label.as_deref());
    let name_text = name.render();
    BackupName::parse(&name_text).map_err(|e| format!("--label: {e}"))?;
    let mut sinks: Vec<Arc<dyn FileSink>> = Vec::new();
    let mut locations = Vec::new();
    if let Some(dir) = &args.dir {
        let partial = dir.join(format!("{name_text}{PARTIAL_SUFFIX}"));
        // Not create_dir_all: two runs in the same second must not share a folder.
        std::fs::create_dir(&partial).map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        sinks.push(Arc::new(VolumeFolder::new(&partial)));
        locations.push(dir.display().to_string());
    }
    if let Some(target) = &target {
        if target.folder_exists(&name_text).await.map_err(|e| e.to_string())? {
            return Err(format!(
                "{}/{name_text} exists already (another run started in the same second); not writing into it",
                target.location()
            ));
        }
        sinks.push(Arc::new(target.run(&name_text)));
        locations.push(target.location().to_string());
    }
    if let Some(file) = &args.name_file {
        std::fs::write(file, &name_text)
            .map_err(|e| format!("cannot write the run's name to {}: {e}", file.display()))?;
    }
    let client = client_with_env_tls(&args.uri_env, &uri, MONGO_TIMEOUT, "referral-operator-backup", None)
        .await
        .map_err(|e| e.to_string())?;
    let request = DumpRequest {
        database: args.database.clone(),
        collections: args.collections.clone(),
        gzip: (!args.no_gzip).then_some(args.gzip_level),
    };
    let started = Instant::now();
    let summary = dump(&client, &request, &sinks, &redactor).await.map_err(|e| format!("backup {name_text}: {e}"))?;
    let summary_file = write_summary(&sinks, &summary).await?;
    let seconds = started.elapsed().as_secs_f64();
    let mut completed = false;
    if !args.leave_open {
        let completed_at = Timestamp::now();
        if let Some(dir) = &args.dir {
            store::finalize(dir, &name_text, &FinalizeOptions { expect_redis: false, completed_at })
                .map_err(|e| format!("backup {name_text} in {}: {e}", dir.display()))?;
        }
        if let Some(target) = &target {
            let manifest = Manifest::native(&name, completed_at, summary.clone(), vec![summary_file]);
            target.write_marker(&manifest).await.map_err(|e| format!("backup {name_text}: {e}"))?;
        }
        completed = true;
    }
    print_dump(args.output, &name_text, &summary, &locations, seconds, completed);
    Ok(())
}

/// The S3 secrets of the environment, for redaction.
pub(super) fn target_secrets() -> Vec<String> {
    Credentials::from_env()
        .map(|c| [Some(c.access_key_id), Some(c.secret_access_key), c.session_token].into_iter().flatten().collect())
        .unwrap_or_default()
}

async fn write_summary(sinks: &[Arc<dyn FileSink>], summary: &DumpSummary) -> Result<ManifestFile, String> {
    let body = serde_json::to_vec_pretty(summary).map_err(|e| e.to_string())?;
    let sinks = sinks.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut digest = StreamDigest::default();
        digest.update(&body);
        let mut tee = TeeFile::create(&sinks, DUMP_SUMMARY_FILE).map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut tee, &body).map_err(|e| format!("writing {DUMP_SUMMARY_FILE}: {e}"))?;
        tee.finish().map_err(|e| e.to_string())?;
        Ok(ManifestFile { path: DUMP_SUMMARY_FILE.into(), size_bytes: digest.bytes(), sha256: Some(digest.hex()) })
    })
    .await
    .map_err(|e| e.to_string())?
}

fn print_dump(output: Output, name: &str, summary: &DumpSummary, locations: &[String], seconds: f64, completed: bool) {
    let documents: u64 = summary.collections.iter().map(|c| c.documents).sum();
    let bson: u64 = summary.collections.iter().map(|c| c.bson_bytes).sum();
    let stored: u64 = summary.files().map(|f| f.size_bytes).sum();
    match output {
        Output::Json => println!(
            "{}",
            json!({"name": name, "complete": completed, "targets": locations, "seconds": seconds, "mongodb": summary})
        ),
        Output::Text => {
            for c in &summary.collections {
                let file = c.data_file.as_ref().unwrap_or(&c.metadata_file);
                println!(
                    "dumped {}.{} ({}): {} documents, {} bytes of BSON, {} indexes -> {} ({} bytes, sha256 {})",
                    summary.database,
                    c.name,
                    c.kind.as_str(),
                    c.documents,
                    c.bson_bytes,
                    c.indexes,
                    file.path,
                    file.size_bytes,
                    file.sha256
                );
            }
            println!(
                "backup {name} {} in {}: {} collections, {documents} documents, {bson} bytes of BSON ({stored} stored) in {seconds:.1}s ({:.0} documents/s, {:.1} MB/s)",
                if completed { "is complete" } else { "is written, left open for finalize" },
                locations.join(" and "),
                summary.collections.len(),
                rate(documents as f64, seconds),
                rate(bson as f64 / 1e6, seconds),
            );
        }
    }
}

/// Where a restore reads from, and what it holds.
struct Located {
    source: Arc<dyn BackupSource>,
    plan: RestorePlan,
}

async fn locate(
    args_dir: Option<&Path>,
    name: Option<&str>,
    from_dump: Option<&Path>,
    from_database: Option<&str>,
    s3: &S3Args,
) -> Result<(Located, Option<ObjectTarget>), String> {
    let target = s3.connect().map_err(|e| e.to_string())?;
    if let Some(path) = from_dump {
        let folder = VolumeFolder::new(path);
        let database = match from_database {
            Some(database) => database.to_string(),
            None => only_database_folder(path)?,
        };
        let source: Arc<dyn BackupSource> = Arc::new(folder);
        let plan = {
            let source = source.clone();
            tokio::task::spawn_blocking(move || RestorePlan::from_directory(source.as_ref(), &database))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        };
        return Ok((Located { source, plan }, target));
    }
    let Some(name) = name else {
        return Err("say which backup: --name (with --dir or --s3-bucket), or --from-dump".into());
    };
    let (source, manifest): (Arc<dyn BackupSource>, Manifest) = match (&target, args_dir) {
        (Some(target), _) => (Arc::new(target.run(name)), target.read_manifest(name).await.map_err(|e| e.to_string())?),
        (None, Some(dir)) => {
            let manifest = store::complete_manifest(dir, name).map_err(|e| e.to_string())?;
            (Arc::new(VolumeFolder::new(dir.join(name))), manifest)
        }
        (None, None) => return Err("say where backup {name} is: --dir or --s3-bucket".replace("{name}", name)),
    };
    let plan = RestorePlan::from_manifest(&manifest).map_err(|why| format!("backup {name}: {why}"))?;
    Ok((Located { source, plan }, target))
}

fn only_database_folder(path: &Path) -> Result<String, String> {
    let entries = std::fs::read_dir(path).map_err(|e| format!("cannot list {}: {e}", path.display()))?;
    let folders: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n != "admin" && n != "config" && n != "local")
        .collect();
    match folders.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("{} holds no database folder", path.display())),
        many => Err(format!(
            "{} holds several databases ({}): choose one with --from-database",
            path.display(),
            many.join(", ")
        )),
    }
}

/// Runs `backup restore`.
pub fn run_restore(args: RestoreArgs) -> ExitCode {
    run_to_exit(restore_command(&args))
}

async fn restore_command(args: &RestoreArgs) -> Result<(), String> {
    if args.from_bucket && args.s3.bucket.is_none() {
        return Err("the restore is to read the backup from object storage (source: ObjectStorage), but no bucket is configured: set spec.backup.objectStorage on the ReferralSystem, or restore with source: Volume".into());
    }
    let uri = read_uri(&args.uri_env)?;
    let (located, target) = locate(
        args.dir.as_deref(),
        args.name.as_deref(),
        args.from_dump.as_deref(),
        args.from_database.as_deref(),
        &args.s3,
    )
    .await?;
    let mut secrets = uri_redactor(&uri);
    if target.is_some() {
        secrets.extend(target_secrets());
    }
    let redactor = Redactor::new(secrets);
    let plan = located.plan.only(&args.collections).map_err(|e| e.to_string())?;
    let client = client_with_env_tls(&args.uri_env, &uri, MONGO_TIMEOUT, "referral-operator-restore", None)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let report = restore(&client, located.source.clone(), &plan, &args.database, &redactor)
        .await
        .map_err(|e| format!("restore from {}: {e}", located.source.location()))?;
    print_restore(args.output, &located.source.location(), &report, started.elapsed().as_secs_f64());
    if let (Some(dir), Some(name)) = (&args.redis_to, &args.name) {
        copy_redis_snapshot(located.source.clone(), &dir.join(name)).await?;
    }
    Ok(())
}

/// Streams the backup's `redis.rdb` into `folder`; a backup without one is left so
/// (the Redis restore then says there is nothing to restore).
async fn copy_redis_snapshot(source: Arc<dyn BackupSource>, folder: &Path) -> Result<(), String> {
    let folder = folder.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut reader = match source.open(REDIS_SNAPSHOT) {
            Ok(reader) => reader,
            Err(crate::backup::target::TargetError::NotFound { .. }) => {
                println!("{} holds no Redis snapshot", source.location());
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        };
        std::fs::create_dir_all(&folder).map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
        let path = folder.join(REDIS_SNAPSHOT);
        let mut file = std::fs::File::create(&path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let bytes = std::io::copy(&mut reader, &mut file)
            .map_err(|e| format!("copying {REDIS_SNAPSHOT} from {} failed: {e}", source.location()))?;
        println!("copied the Redis snapshot ({bytes} bytes) from {} to {}", source.location(), path.display());
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The Redis snapshot's file name in a backup.
const REDIS_SNAPSHOT: &str = "redis.rdb";

fn print_restore(output: Output, location: &str, report: &RestoreReport, seconds: f64) {
    let documents: u64 = report.collections.iter().map(|c| c.documents).sum();
    match output {
        Output::Json => println!("{}", json!({"from": location, "seconds": seconds, "restore": report})),
        Output::Text => {
            for c in &report.collections {
                println!(
                    "restored {}.{} ({}): {} documents, {} indexes (count checked)",
                    report.database,
                    c.name,
                    c.kind.as_str(),
                    c.documents,
                    c.indexes
                );
            }
            println!(
                "restored {} collections, {documents} documents from {location} into {} in {seconds:.1}s ({:.0} documents/s); the backup was verified first ({} bytes read)",
                report.collections.len(),
                report.database,
                rate(documents as f64, seconds),
                report.verified.bytes_read
            );
        }
    }
}

/// `backup verify` of a native dump or of a backup in object storage: every file read
/// and checked. Returns `None` when the backup is a Mongodump-method backup on the
/// volume, for the caller's size-and-checksum check.
pub fn run_verify(dir: &Path, name: &str, s3: &S3Args, output: Output) -> Option<ExitCode> {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => return Some(fail(e)),
    };
    let result: Result<Option<(Manifest, VerifyReport)>, String> = runtime.block_on(async {
        let target = s3.connect().map_err(|e| e.to_string())?;
        let (source, manifest): (Arc<dyn BackupSource>, Manifest) = match &target {
            Some(target) => (Arc::new(target.run(name)), target.read_manifest(name).await.map_err(|e| e.to_string())?),
            None => {
                let manifest = store::complete_manifest(dir, name).map_err(|e| e.to_string())?;
                if manifest.mongodb.is_none() {
                    return Ok(None);
                }
                (Arc::new(VolumeFolder::new(dir.join(name))), manifest)
            }
        };
        let plan = RestorePlan::from_manifest(&manifest).map_err(|why| format!("backup {name}: {why}"))?;
        let report = tokio::task::spawn_blocking(move || verify(source.as_ref(), &plan))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("backup {name} is not sound: {e}"))?;
        Ok(Some((manifest, report)))
    });
    match result {
        Ok(None) => None,
        Err(e) => Some(fail(e)),
        Ok(Some((manifest, report))) => {
            match output {
                Output::Json => println!("{}", json!({"name": name, "manifest": manifest, "verified": report})),
                Output::Text => {
                    let documents: u64 = report.collections.iter().map(|c| c.documents).sum();
                    println!(
                        "backup {name} is complete and sound: {} files, {} bytes read, {} collections, {documents} documents, every checksum and count as recorded{}",
                        manifest.files.len(),
                        report.bytes_read,
                        report.collections.len(),
                        if manifest.redis { ", a Redis snapshot" } else { "" }
                    );
                }
            }
            Some(ExitCode::SUCCESS)
        }
    }
}

/// `backup list --s3-bucket ...`.
pub fn run_list(s3: &S3Args, output: Output) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => return fail(e),
    };
    let listing = runtime.block_on(async {
        let target = s3.connect().map_err(|e| e.to_string())?.ok_or("no --s3-bucket")?;
        target.list().await.map_err(|e| e.to_string())
    });
    match listing {
        Ok(listing) => {
            super::backup::print_listing(&listing, output);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `backup prune --s3-bucket ...`: the same planner as on the volume.
pub fn run_prune(s3: &S3Args, policy: RetentionPolicy, dry_run: bool, delete_stale: bool, output: Output) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => return fail(e),
    };
    let result = runtime.block_on(async {
        let target = s3.connect().map_err(|e| e.to_string())?.ok_or("no --s3-bucket")?;
        let listing = target.list().await.map_err(|e| e.to_string())?;
        let plan = super::backup::plan_for(&listing, policy, delete_stale, super::backup::now());
        let report = if dry_run { None } else { Some(target.apply(&plan).await) };
        Ok::<_, String>((target.location().to_string(), listing, plan, report))
    });
    match result {
        Ok((location, listing, plan, report)) => {
            super::backup::print_prune(Path::new(&location), policy, dry_run, &listing, &plan, report.as_ref(), output);
            match report {
                Some(report) if !report.failed.is_empty() => ExitCode::FAILURE,
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => fail(e),
    }
}

/// What finalize does in the bucket once the run is complete on the volume: upload
/// the files the dump did not stream there (the Redis snapshot), write the manifest
/// last (from then on the backup is complete there too), and prune the bucket with
/// the same retention. Returns the prune's plan as text.
pub fn finish_in_bucket(
    s3: &S3Args,
    dir: &Path,
    manifest: &Manifest,
    policy: RetentionPolicy,
    at: Timestamp,
) -> Result<String, String> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let target = s3.connect().map_err(|e| e.to_string())?.ok_or("no --s3-bucket")?;
        let name = manifest.name.clone();
        let streamed: Vec<String> = manifest
            .mongodb
            .as_ref()
            .map(|m| m.files().map(|f| f.path.clone()).chain([DUMP_SUMMARY_FILE.to_string()]).collect())
            .unwrap_or_default();
        let missing: Vec<String> =
            manifest.files.iter().map(|f| f.path.clone()).filter(|p| !streamed.contains(p)).collect();
        let folder: Arc<dyn FileSink> = Arc::new(target.run(&name));
        let source = dir.join(&name);
        tokio::task::spawn_blocking(move || {
            for path in missing {
                let local = source.join(&path);
                let mut file =
                    std::fs::File::open(&local).map_err(|e| format!("cannot read {}: {e}", local.display()))?;
                let mut upload = folder.create(&path).map_err(|e| e.to_string())?;
                std::io::copy(&mut file, &mut upload)
                    .map_err(|e| format!("uploading {path} to {}: {e}", folder.location()))?;
                upload.finish().map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        })
        .await
        .map_err(|e| e.to_string())??;
        target.write_marker(manifest).await.map_err(|e| format!("backup {name}: {e}"))?;
        let listing = target.list().await.map_err(|e| e.to_string())?;
        let plan = super::backup::plan_for(&listing, policy, false, at);
        let report = target.apply(&plan).await;
        let text =
            super::backup::plan_text(Path::new(target.location()), policy, &plan, &listing.others, Some(&report));
        if !report.failed.is_empty() {
            return Err(format!("backup {name} is complete in {}, but pruning failed: {text}", target.location()));
        }
        Ok(format!("backup {name} is complete in {}\n{text}", target.location()))
    })
}
