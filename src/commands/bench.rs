//! `bench chains`: how fast and how small the chain check is, measured, not asserted.
//!
//! In memory (default N = 10,000,000): the synthetic population of
//! [`crate::checks::chain_generator`] is generated in chunks of a cursor batch's size
//! and each chunk streamed into the engine; the command prints the CPU time of each
//! engine phase (this thread's, `CLOCK_THREAD_CPUTIME_ID`), the generator's apart,
//! and the peak resident memory of the process (`VmHWM`, read before any baseline
//! runs). The engine receives ids as values, as the real check does after reading
//! them from BSON: decoding documents is the streaming path's cost, not measured here.
//! Then the naive baseline on the same users: a `std` `HashMap` from id to
//! `referredBy` built over every user, and a per-user walk through it with a visited
//! set, timed on an evenly spread sample and extrapolated linearly (each walk is
//! independent of the others; the output says so); it prints the RATIO of that to
//! the engine. A per-user walk over the engine's own parent array
//! ([`crate::checks::chains::naive_class`]) isolates the classification pass. It also
//! checks that the engine found exactly the injected defects and that both baselines
//! agree with it on every sampled user.
//!
//! With `--mongo` (default N = 1,000,000): the population is written into a scratch
//! database of the MongoDB server named by `--uri-env`, then the real check
//! ([`crate::checks::chain_source::check_chains`]) reads it back, and the command
//! prints documents per second end to end. The scratch database is dropped afterwards
//! unless `--keep`.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mongodb::bson::{Bson, DateTime, Document, doc, oid::ObjectId};

use crate::checks::chain_generator::{SyntheticPopulation, SyntheticReferrer};
use crate::checks::chain_source::check_chains;
use crate::checks::chains::{
    ChainBuilder, ChainError, ChainOptions, ChainReport, DEPTH_CAP, FieldValue, KeyRef, UserClass, naive_class,
};
use crate::crd::mongodb::ChainModel;

use super::mongo_client::client_from_env;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// The chain check on a synthetic population with injected defects.
    Chains(BenchChainsArgs),
    /// The native dump and restore through a MongoDB server: documents/s, MB/s,
    /// peak RSS, and the dump's speed against a plain cursor read.
    Backup(super::bench_backup::BenchBackupArgs),
}

/// Flags of `bench chains`.
#[derive(Debug, clap::Args)]
pub struct BenchChainsArgs {
    /// Users to generate. Default 10,000,000 in memory, 1,000,000 with --mongo.
    #[arg(long)]
    pub users: Option<u64>,
    /// Maximum chain depth the records are checked against.
    #[arg(long, default_value_t = crate::crd::settings::DEFAULT_MAX_CHAIN_DEPTH)]
    pub max_depth: u8,
    /// Share of users who signed up without a referrer, in thousandths.
    #[arg(long, default_value_t = 200)]
    pub root_permille: u64,
    /// Users the naive walk is timed on (spread evenly, extrapolated to all).
    #[arg(long, default_value_t = 1_000_000)]
    pub naive_sample: u64,
    /// Skip the referral records (users only).
    #[arg(long)]
    pub no_records: bool,
    /// Pipeline depth for users (in memory only; default the engine's). 0 with
    /// `--batch 1` feeds one document at a time, to measure what the pipeline gains.
    #[arg(long)]
    pub lead: Option<usize>,
    /// Referral records per batch (in memory only; default the engine's).
    #[arg(long)]
    pub batch: Option<usize>,
    /// End to end through the MongoDB server named by --uri-env.
    #[arg(long)]
    pub mongo: bool,
    /// Environment variable holding the MongoDB connection string (--mongo).
    #[arg(long, default_value = "MONGODB_URI")]
    pub uri_env: String,
    /// Scratch database (--mongo); dropped first and afterwards.
    #[arg(long, default_value = "refop_bench")]
    pub database: String,
    /// Keep the scratch database afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// CPU time this thread has used, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`: the
/// scheduler's run time of this thread, brought up to date at the call, so that it can
/// time a chunk of a few milliseconds; `/proc/thread-self/schedstat` reports the same
/// counter but only as of the last tick or switch).
pub fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed
    // `now` and touches nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// CPU time of every live thread of the process, in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

/// A `VmHWM`/`VmRSS` line of /proc/self/status, in KiB.
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs a `bench` subcommand.
pub fn run(command: BenchCommand) -> ExitCode {
    let ok = match command {
        BenchCommand::Chains(args) if args.mongo => bench_mongo(&args),
        BenchCommand::Chains(args) => bench_memory(&args),
        BenchCommand::Backup(args) => super::bench_backup::run(&args),
    };
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn referred_by(population: &SyntheticPopulation, i: u64) -> FieldValue<'static> {
    match population.referrer(i) {
        SyntheticReferrer::None => FieldValue::Absent,
        SyntheticReferrer::User(p) => FieldValue::Key(KeyRef::ObjectId(population.id(p))),
        SyntheticReferrer::Missing(id) => FieldValue::Key(KeyRef::ObjectId(id)),
        SyntheticReferrer::Malformed => FieldValue::WrongType("an array"),
    }
}

/// Users generated per chunk before the consumer takes them: the generator's work
/// (a division per user among other things) is timed apart from the engine's instead
/// of being estimated and subtracted. 8192 users are about half a MiB, a cursor batch
/// of the size the real check reads (and cache-resident, as a cursor batch is).
const FEED_CHUNK: u64 = 8192;

/// A generated user as the engine receives it: the id and `referredBy`.
type GeneratedUser = ([u8; 12], FieldValue<'static>);

/// CPU time of the two sides of a chunked feed.
#[derive(Debug, Clone, Copy, Default)]
struct FeedTimes {
    generator_ns: u64,
    consumer_ns: u64,
}

/// Generates users `0..n` chunk by chunk and hands each chunk to `consume`, timing
/// the generator and the consumer separately (this thread's CPU time). Stops at the
/// consumer's first error.
fn feed_users<E>(
    population: &SyntheticPopulation,
    n: u64,
    mut consume: impl FnMut(&[GeneratedUser]) -> Result<(), E>,
) -> Result<FeedTimes, E> {
    let mut chunk: Vec<GeneratedUser> = Vec::with_capacity(FEED_CHUNK as usize);
    let mut times = FeedTimes::default();
    let mut start = 0u64;
    while start < n {
        let end = (start + FEED_CHUNK).min(n);
        let t0 = thread_cpu_ns();
        chunk.clear();
        chunk.extend((start..end).map(|i| (population.id(i), referred_by(population, i))));
        let t1 = thread_cpu_ns();
        consume(&chunk)?;
        let t2 = thread_cpu_ns();
        times.generator_ns += t1 - t0;
        times.consumer_ns += t2 - t1;
        start = end;
    }
    Ok(times)
}

/// The engine's side of one chunk of users. Out of line so that a profiler
/// (callgrind) counts the ingest's instructions under it, apart from the generator's.
#[inline(never)]
fn ingest_chunk(builder: &mut ChainBuilder, chunk: &[GeneratedUser]) -> Result<(), ChainError> {
    chunk.iter().try_for_each(|(id, referred_by)| {
        builder.add_user(FieldValue::Key(KeyRef::ObjectId(*id)), *referred_by, FieldValue::Absent)
    })
}

/// Compares a report with what the generator injected; prints and returns agreement.
fn defects_match(population: &SyntheticPopulation, report: &ChainReport, records: bool) -> bool {
    let injected = population.injected();
    let mut pairs = vec![
        ("self-referrals", injected.self_referrals, report.self_referrals),
        ("cycles", injected.cycles, report.cycles),
        ("orphans", injected.orphans, report.orphans),
        ("malformed referredBy", injected.malformed_referred_by, report.malformed.referred_by_type),
    ];
    if records {
        pairs.push(("tier too high", injected.tier_too_high, report.records.tier_too_high));
        pairs.push(("wrong referrer", injected.wrong_referrer, report.records.wrong_referrer));
    }
    let mut ok = true;
    for (what, want, got) in pairs {
        if want != got {
            println!("  MISMATCH {what}: injected {want}, found {got}");
            ok = false;
        }
    }
    if ok {
        println!("  found exactly the injected defects: {injected:?}");
    }
    ok
}

/// The naive baseline of the issue, as a first implementation would write it: the
/// users in a `std` hash map from id to `referredBy`, and for each user a walk up
/// through that map with a set of the ids seen, until a user with no referrer, an id
/// that is no user (an orphan's missing referrer, depth as the engine counts it) or a
/// repeat.
fn naive_map_class(users: &HashMap<[u8; 12], Option<[u8; 12]>>, user: [u8; 12]) -> UserClass {
    let mut seen = HashSet::new();
    let mut v = user;
    let mut depth: u64 = 0;
    loop {
        if !seen.insert(v) {
            return if v != user {
                UserClass::BelowCycle
            } else if users.get(&user) == Some(&Some(user)) {
                UserClass::SelfReferral
            } else {
                UserClass::InCycle
            };
        }
        match users.get(&v) {
            Some(Some(p)) => {
                v = *p;
                depth += 1;
            }
            Some(None) | None => return UserClass::Depth(depth.min(u64::from(DEPTH_CAP)) as u8),
        }
    }
}

fn bench_memory(args: &BenchChainsArgs) -> bool {
    let n = args.users.unwrap_or(10_000_000);
    let population =
        SyntheticPopulation { root_permille: args.root_permille, ..SyntheticPopulation::new(n, args.max_depth) };
    println!(
        "bench chains: {n} users in memory, maxChainDepth {}, {}‰ roots, engine {}",
        args.max_depth,
        args.root_permille,
        {
            let (lead, batch) = ChainBuilder::default_pipeline();
            format!("pipeline lead {} and record batch {}", args.lead.unwrap_or(lead), args.batch.unwrap_or(batch))
        }
    );
    let rss_start = status_kib("VmRSS:");

    let options = ChainOptions { max_depth: args.max_depth, ..ChainOptions::default() };
    let wall = Instant::now();
    let t = thread_cpu_ns();
    let mut builder = ChainBuilder::new(options, n as usize);
    if args.lead.is_some() || args.batch.is_some() {
        let (lead, batch) = ChainBuilder::default_pipeline();
        builder = builder.with_pipeline(args.lead.unwrap_or(lead), args.batch.unwrap_or(batch));
    }
    let allocate_ns = thread_cpu_ns() - t;
    let fed = feed_users(&population, n, |chunk| ingest_chunk(&mut builder, chunk));
    let fed = match fed {
        Ok(fed) => fed,
        Err(e) => {
            println!("error: {e}");
            return false;
        }
    };
    let generate_users_ns = fed.generator_ns;
    // The engine's ingest: sizing its arrays and taking every user.
    let ingest_ns = allocate_ns + fed.consumer_ns;
    // Where the peak is reached: after ingest (keys, index, parents) or later (marks).
    let hwm_ingest_kib = status_kib("VmHWM:");
    let t = thread_cpu_ns();
    let mut analysis = match builder.finish() {
        Ok(analysis) => analysis,
        Err(e) => {
            println!("error: {e}");
            return false;
        }
    };
    let classify_ns = thread_cpu_ns() - t;
    let users_wall = wall.elapsed();
    let hwm_classify_kib = status_kib("VmHWM:");

    let mut records_ns = 0;
    let mut generate_records_ns = 0;
    let mut record_count = 0u64;
    if !args.no_records {
        // Chunked like the users: the records of FEED_CHUNK users generated, then fed.
        let mut per_user = Vec::new();
        let mut chunk: Vec<([u8; 12], [u8; 12], u32)> = Vec::new();
        let mut start = 0u64;
        while start < n {
            let end = (start + FEED_CHUNK).min(n);
            let t0 = thread_cpu_ns();
            chunk.clear();
            for i in start..end {
                population.records(i, &mut per_user);
                chunk.extend(per_user.iter().map(|r| (population.id(r.referrer), population.id(r.referred), r.tier)));
            }
            let t1 = thread_cpu_ns();
            for (referrer, referred, tier) in &chunk {
                analysis.add_record(
                    FieldValue::Absent,
                    FieldValue::Key(KeyRef::ObjectId(*referrer)),
                    FieldValue::Key(KeyRef::ObjectId(*referred)),
                    FieldValue::Key(KeyRef::Int(i64::from(*tier))),
                );
            }
            let t2 = thread_cpu_ns();
            record_count += chunk.len() as u64;
            generate_records_ns += t1 - t0;
            records_ns += t2 - t1;
            start = end;
        }
    }
    let t = thread_cpu_ns();
    let report = analysis.report();
    let report_ns = thread_cpu_ns() - t;
    let peak_kib = status_kib("VmHWM:");

    let engine_users_ns = ingest_ns + classify_ns;
    println!(
        "  generator (not timed as engine work): {:.3} s CPU for the users, fed in chunks of {FEED_CHUNK}",
        secs(generate_users_ns)
    );
    println!("  ingest {n} users (intern ids, parent array): {:.3} s CPU", secs(ingest_ns));
    println!("  classification pass (depth, cycles, orphans): {:.3} s CPU", secs(classify_ns));
    println!("  report pass (counts, distribution, examples): {:.3} s CPU", secs(report_ns));
    println!(
        "  ANALYSIS of {n} users: {:.3} s CPU (ingest + classification + report, generator excluded), {:.2} s wall incl. generator",
        secs(engine_users_ns + report_ns),
        users_wall.as_secs_f64()
    );
    if !args.no_records {
        println!(
            "  referral records: {record_count} checked in {:.3} s CPU (generator excluded; it took {:.3} s)",
            secs(records_ns),
            secs(generate_records_ns)
        );
    }
    println!(
        "  PEAK MEMORY (VmHWM): {:.1} MiB (process RSS before: {:.1} MiB); graph holds {:.1} MiB on the heap",
        mib(peak_kib),
        mib(rss_start),
        analysis.heap_bytes() as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  VmHWM by phase: {:.1} MiB after ingest, {:.1} MiB after classification, {:.1} MiB after records and report ({} bytes)",
        mib(hwm_ingest_kib),
        mib(hwm_classify_kib),
        mib(peak_kib),
        peak_kib * 1024
    );
    let mean_depth = {
        let (sum, users) = report
            .depth_distribution
            .iter()
            .fold((0u64, 0u64), |(s, u), d| (s + u64::from(d.depth) * d.users, u + d.users));
        sum as f64 / users.max(1) as f64
    };
    println!(
        "  shape: {} roots, mean depth {mean_depth:.2}, deepest {}, {} users deeper than {}",
        report.roots,
        report.depth_distribution.last().map(|d| d.depth).unwrap_or(0),
        report.deeper_than_max,
        args.max_depth
    );
    let mut ok = defects_match(&population, &report, !args.no_records);

    // The naive baseline of the issue: a hash map of ids and a walk per user. The map
    // is built over every user (measured, not extrapolated); the walks run on an even
    // sample and are extrapolated. Run after the engine's peak memory was read.
    let mut by_id: HashMap<[u8; 12], Option<[u8; 12]>> = HashMap::new();
    let map_fed = feed_users(&population, n, |chunk| {
        for (id, referred_by) in chunk {
            let parent = match referred_by {
                FieldValue::Key(KeyRef::ObjectId(p)) => Some(*p),
                _ => None,
            };
            by_id.entry(*id).or_insert(parent);
        }
        Ok::<(), std::convert::Infallible>(())
    });
    let map_build_ns = match map_fed {
        Ok(fed) => fed.consumer_ns,
        Err(never) => match never {},
    };
    let map_sample = args.naive_sample.clamp(1, n.max(1));
    let map_stride = (n / map_sample).max(1);
    let mut map_classes = Vec::with_capacity(map_sample as usize);
    let t = thread_cpu_ns();
    let mut i = 0u64;
    while i < n && (map_classes.len() as u64) < map_sample {
        let id = population.id(i);
        map_classes.push((id, naive_map_class(&by_id, id)));
        i += map_stride;
    }
    let map_walk_ns = thread_cpu_ns() - t;
    drop(by_id);
    let map_walked = map_classes.len() as u64;
    let map_disagreements = map_classes
        .iter()
        .filter(|(id, class)| analysis.node_of(KeyRef::ObjectId(*id)).map(|node| analysis.class(node)) != Some(*class))
        .count();
    let map_walk_all_ns = map_walk_ns as f64 * n as f64 / map_walked.max(1) as f64;
    let naive_total_ns = map_build_ns as f64 + map_walk_all_ns;
    println!(
        "  NAIVE BASELINE (std HashMap id -> referredBy, per-user walk with a visited set): map of {n} users built in {:.3} s CPU (generator excluded); walks {:.3} s CPU on {map_walked} users{}; total {:.2} s",
        secs(map_build_ns),
        secs(map_walk_ns),
        if map_walked == n { String::new() } else { format!(", extrapolated to all: {:.2} s", map_walk_all_ns / 1e9) },
        naive_total_ns / 1e9
    );
    println!(
        "  RATIO naive baseline / engine analysis: {:.1}x ({:.2} s vs {:.3} s CPU{})",
        naive_total_ns / (engine_users_ns + report_ns).max(1) as f64,
        naive_total_ns / 1e9,
        secs(engine_users_ns + report_ns),
        if map_walked == n { "" } else { "; walks extrapolated from the sample" }
    );
    if map_disagreements > 0 {
        println!("  MISMATCH: the naive baseline disagrees with the engine on {map_disagreements} sampled users");
        ok = false;
    } else {
        println!("  the naive baseline agrees with the engine on all {map_walked} sampled users");
    }

    // The per-user walk over the engine's own parent array: isolates the
    // classification algorithm from the id handling. Same sample of users.
    let sampled_nodes: Vec<u32> =
        map_classes.iter().filter_map(|(id, _)| analysis.node_of(KeyRef::ObjectId(*id))).collect();
    let parents = analysis.parents();
    let t = thread_cpu_ns();
    let classes: Vec<UserClass> = sampled_nodes.iter().map(|&node| naive_class(parents, node)).collect();
    let naive_ns = thread_cpu_ns() - t;
    let walked = classes.len() as u64;
    let disagreements =
        sampled_nodes.iter().zip(&classes).filter(|&(&node, class)| analysis.class(node) != *class).count();
    let naive_all_ns = naive_ns as f64 * n as f64 / walked.max(1) as f64;
    let exact = walked == n;
    println!(
        "  per-user walk over the interned parent array (visited set per user): {:.3} s CPU on {walked} of {n} users{}",
        secs(naive_ns),
        if exact { String::new() } else { format!(", extrapolated to all: {:.2} s", naive_all_ns / 1e9) }
    );
    println!(
        "  ratio per-user walk / classification pass: {:.1}x{}; per-user walk / whole analysis: {:.1}x",
        naive_all_ns / classify_ns.max(1) as f64,
        if exact { "" } else { " (extrapolated from the sample)" },
        naive_all_ns / (engine_users_ns + report_ns).max(1) as f64
    );
    if disagreements > 0 || walked != map_walked {
        println!(
            "  MISMATCH: the per-user walk disagrees with the engine on {disagreements} of {walked} sampled users ({map_walked} sampled)"
        );
        ok = false;
    } else {
        println!("  the per-user walk agrees with the engine on all {walked} sampled users");
    }
    ok
}

fn user_document(population: &SyntheticPopulation, i: u64) -> Document {
    let mut user = doc! {
        "_id": ObjectId::from_bytes(population.id(i)),
        "email": format!("user{i}@example.com"),
        "referralCode": format!("R{i:08X}"),
        "createdAt": DateTime::from_millis(1_700_000_000_000 + i as i64 * 1000),
        "referralStats": {"totalEarned": (i % 1000) as i64, "referrals": (i % 7) as i32},
    };
    match population.referrer(i) {
        SyntheticReferrer::None => {}
        SyntheticReferrer::User(p) => {
            user.insert("referredBy", ObjectId::from_bytes(population.id(p)));
        }
        SyntheticReferrer::Missing(id) => {
            user.insert("referredBy", ObjectId::from_bytes(id));
        }
        SyntheticReferrer::Malformed => {
            user.insert("referredBy", Bson::Array(vec![Bson::ObjectId(ObjectId::from_bytes(population.id(0)))]));
        }
    }
    user
}

fn bench_mongo(args: &BenchChainsArgs) -> bool {
    let n = args.users.unwrap_or(1_000_000);
    let population =
        SyntheticPopulation { root_permille: args.root_permille, ..SyntheticPopulation::new(n, args.max_depth) };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            println!("error: cannot start the async runtime: {e}");
            return false;
        }
    };
    runtime.block_on(async {
        let client = match client_from_env(&args.uri_env, Duration::from_secs(10), "referral-operator-bench", None).await {
            Ok(client) => client,
            Err(e) => {
                println!("error: {e}");
                return false;
            }
        };
        let db = client.database(&args.database);
        if let Err(e) = db.drop().await {
            println!("error: cannot drop the scratch database {}: {e}", args.database);
            return false;
        }
        println!("bench chains --mongo: {n} users into {} (scratch database)", args.database);
        let seeding = Instant::now();
        let users = db.collection::<Document>("users");
        let records = db.collection::<Document>("referrals");
        let mut batch = Vec::with_capacity(10_000);
        let mut record_docs = 0u64;
        let mut buffer = Vec::new();
        let mut record_batch = Vec::with_capacity(10_000);
        for i in 0..n {
            batch.push(user_document(&population, i));
            if !args.no_records {
                population.records(i, &mut buffer);
                for r in &buffer {
                    record_batch.push(doc! {
                        "referrer": ObjectId::from_bytes(population.id(r.referrer)),
                        "referred": ObjectId::from_bytes(population.id(r.referred)),
                        "tier": r.tier as i32,
                        "code": format!("R{:08X}", r.referrer),
                        "status": "completed",
                    });
                }
            }
            if (batch.len() == 10_000 || i + 1 == n)
                && let Err(e) = users.insert_many(batch.drain(..)).await
            {
                println!("error: inserting users: {e}");
                return false;
            }
            if record_batch.len() >= 10_000 || (i + 1 == n && !record_batch.is_empty()) {
                record_docs += record_batch.len() as u64;
                if let Err(e) = records.insert_many(record_batch.drain(..)).await {
                    println!("error: inserting referral records: {e}");
                    return false;
                }
            }
        }
        let seeded = seeding.elapsed();
        println!(
            "  seeded {n} users and {record_docs} referral records in {:.1} s ({:.0} documents/s inserted)",
            seeded.as_secs_f64(),
            (n + record_docs) as f64 / seeded.as_secs_f64()
        );

        let cpu = process_cpu_ns();
        let hwm_before = status_kib("VmHWM:");
        let started = Instant::now();
        let outcome = check_chains(&client, &args.database, &ChainModel::default(), args.max_depth, 10).await;
        let elapsed = started.elapsed();
        let cpu = process_cpu_ns().saturating_sub(cpu);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                println!("error: {e}");
                return false;
            }
        };
        println!(
            "  END TO END: {} documents read and analysed in {:.2} s wall = {:.0} documents/s ({} users, {} records)",
            outcome.documents,
            elapsed.as_secs_f64(),
            outcome.documents as f64 / elapsed.as_secs_f64(),
            outcome.report.users,
            outcome.report.records.total
        );
        println!(
            "  this process: {:.2} s CPU during the check (driver + BSON + engine); VmHWM {:.1} MiB (before the check {:.1} MiB, seeding included)",
            secs(cpu),
            mib(status_kib("VmHWM:")),
            mib(hwm_before)
        );
        let ok = defects_match(&population, &outcome.report, !args.no_records);
        if !args.keep
            && let Err(e) = db.drop().await
        {
            println!("warning: cannot drop the scratch database {}: {e}", args.database);
        }
        ok
    })
}
