//! `bench backup`: how fast the native dump and restore are, and how much memory
//! they take, measured, not asserted.
//!
//! For each size (default 1,000,000 and 5,000,000 documents) a scratch database of
//! the MongoDB server named by `--uri-env` gets one `users` collection of synthetic
//! referral users (about 150 bytes of BSON each, the shape of the deployment guide's
//! users). Then, each timed on its own:
//!
//! 1. **the limit**: a plain cursor read of the collection with the same driver
//!    (`find` with the dump's batch size, every document's bytes touched, nothing
//!    written);
//! 2. **dump**: `referral-operator backup dump` as a child process, gzip, to a
//!    folder (`--dir`, default a temporary one);
//!
//!    these two alternate three times and the fastest run of each counts (the
//!    slower ones measure the neighbours on a shared machine);
//! 3. **verify**: `backup verify` as a child process (every byte read, every
//!    document decoded and counted);
//! 4. **restore**: the database is dropped and `backup restore` (a child process)
//!    brings it back (its own verify pass included, as every restore does).
//!
//! It prints documents/s and MB/s (of BSON) for each, the CPU time each took (from
//! `wait4` for the children: on a shared machine the wall time depends on the load,
//! the CPU time much less), the peak RSS of each child (its `VmHWM`, sampled until
//! it exits: whether memory grows with the data), and the ratio of the dump's speed
//! to the cursor read's (the target: at least 0.8).
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
    /// The dump's gzip level (the dump's own default when absent).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: Option<u32>,
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

/// Runs of the cursor read and of the dump per size.
const ROUNDS: usize = 3;

/// What one child process took.
struct Measured {
    seconds: f64,
    /// User plus system CPU time of the child, from `wait4`.
    cpu_seconds: f64,
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
    let child = command.spawn().map_err(|e| format!("cannot run {args:?}: {e}"))?;
    let pid = i32::try_from(child.id()).map_err(|e| e.to_string())?;
    let status_file = format!("/proc/{pid}/status");
    let mut peak_rss_kib = 0;
    let mut status = 0;
    // SAFETY: rusage is a plain C struct of integers, valid when zeroed.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        if let Some(hwm) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        }) {
            peak_rss_kib = hwm;
        }
        // SAFETY: wait4 writes the status and the usage of our child `pid`, not yet
        // reaped, into the two exclusively borrowed locals.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break;
        }
        if reaped < 0 {
            return Err(format!("waiting for {args:?}: {}", std::io::Error::last_os_error()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Reaped by wait4: the handle (dropped at the end) must not wait for it again.
    let seconds = started.elapsed().as_secs_f64();
    let timeval = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu_seconds = timeval(usage.ru_utime) + timeval(usage.ru_stime);
    let output = std::fs::read_to_string(log).unwrap_or_default();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{args:?} failed:\n{output}"));
    }
    Ok(Measured { seconds, cpu_seconds, peak_rss_kib, output })
}

/// The 1, 5 and 15 minute load averages: the figures of a shared machine mean
/// little without them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
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
        let seed_seconds = seeding.elapsed().as_secs_f64();
        println!(
            "{n} users seeded in {seed_seconds:.1}s ({:.0} documents/s: the server's insert rate, the restore's limit); load average {}",
            per_second(n as f64, seed_seconds),
            load_average()
        );

        let folder = dir.join(format!("n{n}"));
        let folder_text = folder.display().to_string();
        let level = args.gzip_level.map(|l| l.to_string());
        // Read and dump alternate, ROUNDS times each; the fastest of each counts (on
        // a shared machine the slower runs measure the neighbours), the largest RSS.
        let mut read: Option<Step> = None;
        let mut dump: Option<(Step, String)> = None;
        for round in 0..ROUNDS {
            let (seconds, cpu_seconds) = cursor_read(&db, n).await?;
            if read.is_none_or(|r| seconds < r.seconds) {
                read = Some(Step { seconds, cpu_seconds, peak_rss_kib: 0 });
            }
            if round > 0 {
                let _ = std::fs::remove_dir_all(&folder);
            }
            std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
            let mut dump_args = vec!["backup", "dump", "--dir", &folder_text, "--database", &args.database];
            if let Some(level) = &level {
                dump_args.extend(["--gzip-level", level]);
            }
            let measured = run_child(&dump_args, &args.uri_env, &dir.join("dump.log"))?;
            let name = measured
                .output
                .lines()
                .find_map(|l| l.strip_prefix("backup ").and_then(|r| r.split_whitespace().next()))
                .ok_or_else(|| format!("no backup name in the dump's output:\n{}", measured.output))?
                .to_string();
            let mut step = Step::of(&measured);
            if let Some((best, _)) = &dump {
                step.peak_rss_kib = step.peak_rss_kib.max(best.peak_rss_kib);
                if best.seconds <= step.seconds {
                    step = Step { peak_rss_kib: step.peak_rss_kib, ..*best };
                }
            }
            dump = Some((step, name));
        }
        let (Some(read), Some((dump, name))) = (read, dump) else { return Err("no round ran".into()) };
        let summary: crate::backup::manifest::DumpSummary = std::fs::read(folder.join(&name).join(DUMP_SUMMARY_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| format!("no readable {DUMP_SUMMARY_FILE} in the dump"))?;
        let bson_bytes: u64 = summary.collections.iter().map(|c| c.bson_bytes).sum();
        let stored: u64 = std::fs::read_dir(folder.join(&name).join(&args.database))
            .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0);
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
            read,
            dump,
            verify: Step::of(&verify),
            restore: Step::of(&restore),
        };
        row.print();
        println!("  load average at the end: {}", load_average());
        rows.push(row);
    }
    if !args.keep {
        db.drop().await.map_err(|e| format!("cannot drop {}: {e}", args.database))?;
    }
    print_table(&rows);
    Ok(())
}

/// Reads the whole collection with a plain cursor, every document's bytes touched;
/// returns the seconds it took and the CPU seconds this process spent.
async fn cursor_read(db: &mongodb::Database, n: u64) -> Result<(f64, f64), String> {
    let users = db.collection::<RawDocumentBuf>("users");
    let cpu = super::bench::process_cpu_ns();
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
    let cpu_seconds = super::bench::process_cpu_ns().saturating_sub(cpu) as f64 / 1e9;
    Ok((reading.elapsed().as_secs_f64(), cpu_seconds))
}

/// One measured step.
#[derive(Clone, Copy)]
struct Step {
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_kib: u64,
}

impl Step {
    fn of(measured: &Measured) -> Step {
        Step { seconds: measured.seconds, cpu_seconds: measured.cpu_seconds, peak_rss_kib: measured.peak_rss_kib }
    }
}

struct Row {
    n: u64,
    mb: f64,
    stored_mb: f64,
    read: Step,
    dump: Step,
    verify: Step,
    restore: Step,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.dump.seconds > 0.0 { self.read.seconds / self.dump.seconds } else { 0.0 }
    }

    fn steps(&self) -> [(&'static str, Step); 4] {
        [("read", self.read), ("dump", self.dump), ("verify", self.verify), ("restore", self.restore)]
    }

    fn print(&self) {
        let n = self.n as f64;
        for (what, step) in self.steps() {
            let rss = if what == "read" {
                String::new()
            } else {
                format!(", peak RSS {:.1} MiB", step.peak_rss_kib as f64 / 1024.0)
            };
            println!(
                "  {what:<8} {:6.1}s, {:9.0} documents/s, {:6.1} MB/s, CPU {:5.1}s ({:.2} µs/document){rss}",
                step.seconds,
                per_second(n, step.seconds),
                per_second(self.mb, step.seconds),
                step.cpu_seconds,
                step.cpu_seconds * 1e6 / n,
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

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:>10} {:>9} {:>11} {:>11} {:>11} {:>11} {:>6} {:>10} {:>10} {:>10}",
        "documents",
        "MB(BSON)",
        "read doc/s",
        "dump doc/s",
        "verify d/s",
        "restore d/s",
        "ratio",
        "dump RSS",
        "verify RSS",
        "restore RSS"
    );
    for row in rows {
        let n = row.n as f64;
        println!(
            "{:>10} {:>9.0} {:>11.0} {:>11.0} {:>11.0} {:>11.0} {:>6.2} {:>8.1}Mi {:>8.1}Mi {:>8.1}Mi",
            row.n,
            row.mb,
            per_second(n, row.read.seconds),
            per_second(n, row.dump.seconds),
            per_second(n, row.verify.seconds),
            per_second(n, row.restore.seconds),
            row.ratio(),
            row.dump.peak_rss_kib as f64 / 1024.0,
            row.verify.peak_rss_kib as f64 / 1024.0,
            row.restore.peak_rss_kib as f64 / 1024.0,
        );
    }
    println!("ratio = dump documents/s / plain cursor read documents/s (target >= 0.80)");
}
