//! `bench backup`: how fast the native dump and restore are, and how much memory
//! they take, measured, not asserted.
//!
//! For each size (default 1,000,000 and 5,000,000 documents) a scratch database of
//! the MongoDB server named by `--uri-env` gets one `users` collection of synthetic
//! referral users (about 150 bytes of BSON each, the shape of the deployment guide's
//! users). Then, each timed on its own:
//!
//! 1. **the limit**: a plain cursor read of the collection with the same driver
//!    (`find`, every document's bytes touched, nothing written);
//! 2. **dump**: `referral-operator backup dump` as a child process, gzip, to a
//!    folder (`--dir`, default a temporary one);
//! 3. **verify**: `backup verify` as a child process (every byte read, every
//!    document decoded and counted);
//! 4. **restore**: the database is dropped and `backup restore` (a child process)
//!    brings it back (its own verify pass included, as every restore does).
//!
//! It prints documents/s and MB/s (of BSON) for each, the peak RSS of each child
//! (its `VmHWM`, sampled until it exits: whether memory grows with the data), and the
//! ratio of the dump's speed to the cursor read's (the target: at least 0.8).
//! The cursor read runs twice, before the dump and after it, and the faster of the
//! two is the limit, so that a server still warming up does not flatter the dump.
//! The scratch database is dropped afterwards unless `--keep`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, RawDocumentBuf, doc};

use super::mongo_client::client_from_env;
use crate::backup::manifest::DUMP_SUMMARY_FILE;

/// Flags of `bench backup`.
#[derive(Debug, clap::Args)]
pub struct BenchBackupArgs {
    /// Collection sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000000,5000000")]
    pub docs: Vec<u64>,
    /// Environment variable holding the MongoDB connection string.
    #[arg(long, default_value = "MONGODB_URI")]
    pub uri_env: String,
    /// Scratch database; dropped first and afterwards.
    #[arg(long, default_value = "refop_bench_backup")]
    pub database: String,
    /// Where the dumps go (a temporary folder when absent; removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the scratch database and the dumps.
    #[arg(long)]
    pub keep: bool,
}

/// A synthetic user: id, referral code, referrer, sign-up time, e-mail, reward
/// total and tier, as the guide's `users` documents look.
fn user(i: u64, ids: &mut Vec<ObjectId>) -> RawDocumentBuf {
    let id = ObjectId::new();
    let referrer =
        if i.is_multiple_of(5) || ids.is_empty() { None } else { Some(ids[(i as usize * 7919) % ids.len()]) };
    if ids.len() < 100_000 {
        ids.push(id);
    }
    let tier = ["bronze", "silver", "gold"][(i % 3) as usize];
    let document = doc! {
        "_id": id,
        "referralCode": format!("R{i:010}"),
        "referredBy": referrer,
        "createdAt": DateTime::from_millis(1_767_225_600_000 + i as i64 * 1000),
        "email": format!("user{i}@example.com"),
        "rewards": (i % 10_000) as i64,
        "tier": tier,
        "active": !i.is_multiple_of(7),
    };
    RawDocumentBuf::from_document(&document).unwrap_or_default()
}

/// What one child process took.
struct Measured {
    seconds: f64,
    peak_rss_kib: u64,
    output: String,
}

/// Runs this binary with `args` and samples the child's peak RSS (`VmHWM` of its own
/// address space) every 20 ms until it exits. `wait4`'s `ru_maxrss` would not do: on
/// Linux it also counts the parent's memory the child had before `exec`.
fn run_child(args: &[&str], uri_env: &str, log: &Path) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let out = File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut command = Command::new(exe);
    command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    if uri_env != "MONGODB_URI" {
        command.env("MONGODB_URI", std::env::var(uri_env).unwrap_or_default());
    }
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("cannot run {args:?}: {e}"))?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_rss_kib = 0;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if let Some(hwm) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        }) {
            peak_rss_kib = hwm;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = started.elapsed().as_secs_f64();
    let output = std::fs::read_to_string(log).unwrap_or_default();
    if !status.success() {
        return Err(format!("{args:?} failed:\n{output}"));
    }
    Ok(Measured { seconds, peak_rss_kib, output })
}

fn per_second(count: f64, seconds: f64) -> f64 {
    if seconds > 0.0 { count / seconds } else { 0.0 }
}

/// Runs `bench backup`.
pub fn run(args: &BenchBackupArgs) -> bool {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            println!("error: cannot start the async runtime: {e}");
            return false;
        }
    };
    let scratch;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => match tempfile_dir() {
            Ok(made) => {
                scratch = made;
                scratch.clone()
            }
            Err(e) => {
                println!("error: {e}");
                return false;
            }
        },
    };
    let result = runtime.block_on(bench(args, &dir));
    if args.dir.is_none() && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(()) => true,
        Err(e) => {
            println!("error: {e}");
            false
        }
    }
}

fn tempfile_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("refop-bench-backup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

async fn bench(args: &BenchBackupArgs, dir: &Path) -> Result<(), String> {
    let client = client_from_env(&args.uri_env, Duration::from_secs(30), "referral-operator-bench", None)
        .await
        .map_err(|e| e.to_string())?;
    let db = client.database(&args.database);
    println!(
        "bench backup: {} through the server at ${} (database {}, dumps in {})",
        args.docs.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" and "),
        args.uri_env,
        args.database,
        dir.display()
    );
    let mut rows = Vec::new();
    for &n in &args.docs {
        db.drop().await.map_err(|e| format!("cannot drop {}: {e}", args.database))?;
        let seeding = Instant::now();
        let users = db.collection::<RawDocumentBuf>("users");
        let mut ids = Vec::new();
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..n {
            batch.push(user(i, &mut ids));
            if batch.len() == 10_000 || i + 1 == n {
                users.insert_many(batch.drain(..)).await.map_err(|e| format!("seeding: {e}"))?;
            }
        }
        println!("{n} users seeded in {:.1}s", seeding.elapsed().as_secs_f64());

        let first_read = cursor_read(&db, n).await?;
        let folder = dir.join(format!("n{n}"));
        std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
        let folder_text = folder.display().to_string();
        let dump = run_child(
            &["backup", "dump", "--dir", &folder_text, "--database", &args.database],
            &args.uri_env,
            &dir.join("dump.log"),
        )?;
        let name = dump
            .output
            .lines()
            .find_map(|l| l.strip_prefix("backup ").and_then(|r| r.split_whitespace().next()))
            .ok_or_else(|| format!("no backup name in the dump's output:\n{}", dump.output))?
            .to_string();
        let summary: crate::backup::manifest::DumpSummary = std::fs::read(folder.join(&name).join(DUMP_SUMMARY_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| format!("no readable {DUMP_SUMMARY_FILE} in the dump"))?;
        let bson_bytes: u64 = summary.collections.iter().map(|c| c.bson_bytes).sum();
        let stored: u64 = std::fs::read_dir(folder.join(&name).join(&args.database))
            .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0);
        let second_read = cursor_read(&db, n).await?;
        let read_seconds = first_read.min(second_read);
        let verify = run_child(
            &["backup", "verify", "--dir", &folder_text, "--name", &name],
            &args.uri_env,
            &dir.join("verify.log"),
        )?;
        db.drop().await.map_err(|e| format!("cannot drop {}: {e}", args.database))?;
        let restore = run_child(
            &["backup", "restore", "--dir", &folder_text, "--name", &name, "--database", &args.database],
            &args.uri_env,
            &dir.join("restore.log"),
        )?;
        let restored = users.estimated_document_count().await.map_err(|e| e.to_string())?;
        if restored != n {
            return Err(format!("{restored} documents after the restore, {n} expected"));
        }
        if !args.keep {
            let _ = std::fs::remove_dir_all(&folder);
        }
        let mb = bson_bytes as f64 / 1e6;
        let row = Row {
            n,
            mb,
            stored_mb: stored as f64 / 1e6,
            read_seconds,
            dump: (dump.seconds, dump.peak_rss_kib),
            verify: (verify.seconds, verify.peak_rss_kib),
            restore: (restore.seconds, restore.peak_rss_kib),
        };
        row.print();
        rows.push(row);
    }
    if !args.keep {
        db.drop().await.map_err(|e| format!("cannot drop {}: {e}", args.database))?;
    }
    println!();
    println!(
        "{:>10} {:>9} {:>12} {:>12} {:>12} {:>12} {:>7} {:>9} {:>9} {:>9}",
        "documents",
        "MB(BSON)",
        "read doc/s",
        "dump doc/s",
        "verify d/s",
        "restore d/s",
        "ratio",
        "dump RSS",
        "verify",
        "restore"
    );
    for row in &rows {
        println!(
            "{:>10} {:>9.0} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>7.2} {:>7.1}Mi {:>7.1}Mi {:>7.1}Mi",
            row.n,
            row.mb,
            per_second(row.n as f64, row.read_seconds),
            per_second(row.n as f64, row.dump.0),
            per_second(row.n as f64, row.verify.0),
            per_second(row.n as f64, row.restore.0),
            row.ratio(),
            row.dump.1 as f64 / 1024.0,
            row.verify.1 as f64 / 1024.0,
            row.restore.1 as f64 / 1024.0,
        );
    }
    println!("ratio = dump documents/s / plain cursor read documents/s (target >= 0.80)");
    Ok(())
}

/// Reads the whole collection with a plain cursor, every document's bytes
/// touched; returns the seconds it took.
async fn cursor_read(db: &mongodb::Database, n: u64) -> Result<f64, String> {
    let users = db.collection::<RawDocumentBuf>("users");
    let reading = Instant::now();
    // The batch size the dump asks for, so that both read the same way.
    let batch = crate::backup::dump::cursor_batch_size(db, "users").await;
    let mut cursor = users.find(doc! {}).batch_size(batch).await.map_err(|e| format!("reading: {e}"))?;
    let (mut count, mut check) = (0u64, 0u8);
    while cursor.advance().await.map_err(|e| format!("reading: {e}"))? {
        let raw = cursor.current().as_bytes();
        count += 1;
        check ^= raw[raw.len() / 2];
    }
    std::hint::black_box(check);
    if count != n {
        return Err(format!("the cursor read {count} documents of {n}"));
    }
    Ok(reading.elapsed().as_secs_f64())
}

struct Row {
    n: u64,
    mb: f64,
    stored_mb: f64,
    read_seconds: f64,
    dump: (f64, u64),
    verify: (f64, u64),
    restore: (f64, u64),
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.dump.0 > 0.0 { self.read_seconds / self.dump.0 } else { 0.0 }
    }

    fn print(&self) {
        let n = self.n as f64;
        println!(
            "  cursor read: {:.1}s, {:.0} documents/s, {:.1} MB/s",
            self.read_seconds,
            per_second(n, self.read_seconds),
            per_second(self.mb, self.read_seconds)
        );
        for (what, (seconds, rss)) in [("dump", self.dump), ("verify", self.verify), ("restore", self.restore)] {
            println!(
                "  {what:<7} {seconds:.1}s, {:.0} documents/s, {:.1} MB/s, peak RSS {:.1} MiB",
                per_second(n, seconds),
                per_second(self.mb, seconds),
                rss as f64 / 1024.0
            );
        }
        println!(
            "  dump/read ratio {:.2} (target >= 0.80); {:.1} MB of BSON stored as {:.1} MB of gzip",
            self.ratio(),
            self.mb,
            self.stored_mb
        );
    }
}
