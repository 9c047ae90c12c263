//! `check chains`, `check indexes` and `check apply-repair`.
//!
//! Standalone, they take the MongoDB connection string from an environment variable
//! (never from argv), the settings from flags or a ReferralSystem file, print a JSON
//! report on stdout, and exit 0 when everything is sound, 1 when the check found
//! problems, 2 when it could not run.
//!
//! In the cluster, the chain-check CronJob runs `check chains --system NAME
//! --write-status`: the settings come from that ReferralSystem and the summary goes
//! into its `status.chainCheck` by server-side apply on the status subresource, as the
//! status writer [`StatusWriter::ChainCheck`], which owns that field and no other. Then the exit code is 0 whenever the check ran
//! and its result was recorded, violations or not (they are in the status, and a
//! failed Job would only be retried), and 2 otherwise.
//!
//! Nothing here writes to MongoDB except `check indexes` under indexPolicy Ensure and
//! `check apply-repair`, which applies exactly the updates of a plan file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use serde_json::{Value, json};

use crate::checks::chain_repair::{RepairPlan, apply_repair_plan};
use crate::checks::chain_source::{ChainCheckOutcome, check_chains};
use crate::checks::chains::{ChainReport, FindingKind};
use crate::checks::index_sync::sync_indexes;
use crate::crd::mongodb::{ChainModel, IndexPolicy, IndexSpec, ReferredByHolds, default_indexes};
use crate::crd::settings::DEFAULT_MAX_CHAIN_DEPTH;
use crate::crd::status::{ChainCheckFailure, ChainCheckStatus, ChainDepthCount, StatusWriter};
use crate::crd::{ReferralSystem, ReferralSystemStatus};

use super::mongo_client::{MongoClientError, client_from_env};

/// Examples copied into `status.chainCheck.examples`.
pub const STATUS_EXAMPLES: usize = 20;

/// Exit code: everything sound (or, with `--write-status`, the result was recorded).
pub const EXIT_OK: u8 = 0;
/// Exit code: the check found problems.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: the check could not run.
pub const EXIT_ERROR: u8 = 2;

#[derive(Debug, clap::Subcommand)]
pub enum CheckCommand {
    /// Referral-chain integrity: cycles, self-referrals, orphans, referral records whose
    /// tier or referrer disagrees with the chain, malformed documents, depth distribution.
    Chains(ChainsArgs),
    /// Compare the declared MongoDB indexes with the database; under indexPolicy Ensure
    /// also create the missing ones.
    Indexes(IndexesArgs),
    /// Apply a repair plan printed by `check chains --repair-plan`. Each update applies
    /// only if the document still holds the value the plan was made from.
    ApplyRepair(ApplyRepairArgs),
}

/// Where the settings and the database come from.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// Environment variable holding the MongoDB connection string.
    #[arg(long, default_value = "MONGODB_URI")]
    pub uri_env: String,
    /// ReferralSystem file: database, chain model, maxChainDepth, indexes and index
    /// policy are taken from it (flags override).
    #[arg(short = 'f', long = "filename", conflicts_with = "system")]
    pub file: Option<PathBuf>,
    /// Read the settings from this ReferralSystem in the cluster (in-cluster service
    /// account, or KUBECONFIG).
    #[arg(long)]
    pub system: Option<String>,
    /// Namespace of `--system`.
    #[arg(short = 'n', long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Database name.
    #[arg(long)]
    pub database: Option<String>,
    /// Seconds to wait for MongoDB (server selection and connection).
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// Flags of `check chains`.
#[derive(Debug, clap::Args)]
pub struct ChainsArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Highest referral-record tier allowed (referral.maxChainDepth). Default 3.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub max_depth: Option<u8>,
    /// Collection of users. Default `users`.
    #[arg(long)]
    pub users_collection: Option<String>,
    /// Field holding a user's id. Default `_id`.
    #[arg(long)]
    pub user_id_field: Option<String>,
    /// Field naming who referred the user. Default `referredBy`.
    #[arg(long)]
    pub referred_by_field: Option<String>,
    /// What the referred-by field holds. Default user-id.
    #[arg(long, value_enum)]
    pub referred_by_holds: Option<HoldsArg>,
    /// Field holding a user's own referral code. Default `referralCode`.
    #[arg(long)]
    pub referral_code_field: Option<String>,
    /// Collection of referral records. Default `referrals`.
    #[arg(long)]
    pub referrals_collection: Option<String>,
    /// Field of a referral record naming the rewarded ancestor. Default `referrer`.
    #[arg(long)]
    pub referrer_field: Option<String>,
    /// Field of a referral record naming the user who signed up. Default `referred`.
    #[arg(long)]
    pub referred_field: Option<String>,
    /// Field of a referral record holding the tier. Default `tier`.
    #[arg(long)]
    pub tier_field: Option<String>,
    /// Examples kept per kind of finding.
    #[arg(long, default_value_t = 10)]
    pub examples: usize,
    /// Print the updates that would break every cycle and clear every orphan reference
    /// (a plan for `check apply-repair`), instead of the report. Nothing is written.
    #[arg(long)]
    pub repair_plan: bool,
    /// Write the summary into the ReferralSystem's status.chainCheck (needs --system).
    #[arg(long, requires = "system")]
    pub write_status: bool,
}

/// What `referredBy` holds.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HoldsArg {
    UserId,
    ReferralCode,
}

/// Flags of `check indexes`.
#[derive(Debug, clap::Args)]
pub struct IndexesArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Ensure creates missing indexes; Report never writes. Default: the system's
    /// indexPolicy with -f/--system, otherwise Report.
    #[arg(long, value_enum)]
    pub policy: Option<PolicyArg>,
}

/// Index policies.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PolicyArg {
    Ensure,
    Report,
}

/// Flags of `check apply-repair`.
#[derive(Debug, clap::Args)]
pub struct ApplyRepairArgs {
    /// The plan file (`check chains --repair-plan > plan.json`).
    #[arg(long)]
    pub plan: PathBuf,
    /// Environment variable holding the MongoDB connection string.
    #[arg(long, default_value = "MONGODB_URI")]
    pub uri_env: String,
    /// Seconds to wait for MongoDB (server selection and connection).
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// Why a check command could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckCommandError {
    #[error("cannot read {path}: {reason}")]
    ReadFile { path: String, reason: String },
    #[error("{path}: {reason}")]
    ParseSystem { path: String, reason: String },
    #[error("no database given: use --database, -f FILE or --system NAME")]
    NoDatabase,
    #[error("cannot reach the Kubernetes API: {reason}")]
    KubeClient { reason: String },
    #[error("cannot read ReferralSystem {namespace}/{name}: {reason}")]
    GetSystem { namespace: String, name: String, reason: String },
    #[error("cannot write the status of ReferralSystem {namespace}/{name}: {reason}")]
    PatchStatus { namespace: String, name: String, reason: String },
    #[error(transparent)]
    MongoClient(MongoClientError),
    #[error("cannot start the async runtime: {reason}")]
    Runtime { reason: String },
}

/// The settings of one run, from defaults, a file or the cluster, then flags.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSettings {
    pub database: Option<String>,
    pub model: ChainModel,
    pub max_depth: u8,
    pub indexes: Vec<IndexSpec>,
    pub policy: Option<IndexPolicy>,
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            database: None,
            model: ChainModel::default(),
            max_depth: DEFAULT_MAX_CHAIN_DEPTH,
            indexes: default_indexes(),
            policy: None,
        }
    }
}

impl CheckSettings {
    pub fn from_system(system: &ReferralSystem) -> CheckSettings {
        let mongo = &system.spec.mongodb;
        CheckSettings {
            database: Some(mongo.database.clone()),
            model: mongo.chain_model.clone(),
            max_depth: system.spec.referral.max_chain_depth,
            indexes: mongo.indexes.clone(),
            policy: Some(mongo.index_policy),
        }
    }
}

/// The first ReferralSystem in a YAML file, checked like `render` checks it.
pub fn system_from_file(path: &Path) -> Result<ReferralSystem, CheckCommandError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CheckCommandError::ReadFile { path: path.display().to_string(), reason: e.to_string() })?;
    let parse = |reason: String| CheckCommandError::ParseSystem { path: path.display().to_string(), reason };
    for (index, document) in crate::yaml::documents::<Value>(&text).into_iter().enumerate() {
        let value = document.map_err(|e| parse(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        return crate::render::parse_system(index + 1, value).map_err(|e| parse(e.to_string()));
    }
    Err(parse("no ReferralSystem in the file".into()))
}

/// A ReferralSystem read from the cluster, and where to write its status.
struct ClusterSystem {
    api: Api<ReferralSystem>,
    namespace: String,
    name: String,
    status: Option<ReferralSystemStatus>,
}

async fn cluster_system(namespace: &str, name: &str) -> Result<(ReferralSystem, ClusterSystem), CheckCommandError> {
    let client =
        kube::Client::try_default().await.map_err(|e| CheckCommandError::KubeClient { reason: e.to_string() })?;
    let api = Api::<ReferralSystem>::namespaced(client, namespace);
    let system = api.get(name).await.map_err(|e| CheckCommandError::GetSystem {
        namespace: namespace.into(),
        name: name.into(),
        reason: e.to_string(),
    })?;
    let status = system.status.clone();
    Ok((system, ClusterSystem { api, namespace: namespace.into(), name: name.into(), status }))
}

async fn settings(source: &SourceArgs) -> Result<(CheckSettings, Option<ClusterSystem>), CheckCommandError> {
    let (mut settings, cluster) = if let Some(name) = &source.system {
        let (system, cluster) = cluster_system(&source.namespace, name).await?;
        (CheckSettings::from_system(&system), Some(cluster))
    } else if let Some(path) = &source.file {
        (CheckSettings::from_system(&system_from_file(path)?), None)
    } else {
        (CheckSettings::default(), None)
    };
    if let Some(database) = &source.database {
        settings.database = Some(database.clone());
    }
    Ok((settings, cluster))
}

fn apply_chain_flags(args: &ChainsArgs, settings: &mut CheckSettings) {
    let model = &mut settings.model;
    let overrides: [(&Option<String>, &mut String); 8] = [
        (&args.users_collection, &mut model.users_collection),
        (&args.user_id_field, &mut model.user_id_field),
        (&args.referred_by_field, &mut model.referred_by_field),
        (&args.referral_code_field, &mut model.referral_code_field),
        (&args.referrals_collection, &mut model.referrals_collection),
        (&args.referrer_field, &mut model.referrer_field),
        (&args.referred_field, &mut model.referred_field),
        (&args.tier_field, &mut model.tier_field),
    ];
    for (flag, field) in overrides {
        if let Some(value) = flag {
            *field = value.clone();
        }
    }
    if let Some(holds) = args.referred_by_holds {
        model.referred_by_holds = match holds {
            HoldsArg::UserId => ReferredByHolds::UserId,
            HoldsArg::ReferralCode => ReferredByHolds::ReferralCode,
        };
    }
    if let Some(depth) = args.max_depth {
        settings.max_depth = depth;
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CheckCommandError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CheckCommandError::Runtime { reason: e.to_string() })
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print the report: {e}"),
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Runs a `check` subcommand and returns the exit code.
pub fn run(command: CheckCommand) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let code = match command {
        CheckCommand::Chains(args) => runtime.block_on(run_chains(args)),
        CheckCommand::Indexes(args) => runtime.block_on(run_indexes(args)),
        CheckCommand::ApplyRepair(args) => runtime.block_on(run_apply_repair(args)),
    };
    ExitCode::from(code)
}

async fn run_chains(args: ChainsArgs) -> u8 {
    let (mut settings, cluster) = match settings(&args.source).await {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    apply_chain_flags(&args, &mut settings);
    let write = if args.write_status { cluster.as_ref() } else { None };
    let Some(database) = settings.database.clone() else {
        eprintln!("error: {}", CheckCommandError::NoDatabase);
        return EXIT_ERROR;
    };
    let timeout = Duration::from_secs(args.source.timeout.max(1));
    let client = match client_from_env(&args.source.uri_env, timeout, "referral-operator-check", None).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            record_failure(write, "ConfigurationError", &e.to_string()).await;
            return EXIT_ERROR;
        }
    };
    let started = Instant::now();
    let outcome = check_chains(&client, &database, &settings.model, settings.max_depth, args.examples).await;
    let seconds = started.elapsed().as_secs_f64();
    let ChainCheckOutcome { report, analysis, documents } = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("error: {e}");
            record_failure(write, e.reason(), &e.to_string()).await;
            return EXIT_ERROR;
        }
    };
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if args.repair_plan {
        let updates = analysis.repair_plan(&settings.model.user_id_field, &settings.model.referred_by_field);
        let plan = RepairPlan {
            database: database.clone(),
            collection: settings.model.users_collection.clone(),
            user_id_field: settings.model.user_id_field.clone(),
            referred_by_field: settings.model.referred_by_field.clone(),
            generated_at: Some(now().0.to_string()),
            updates,
        };
        eprintln!(
            "repair plan: {} updates ({} cycles, {} self-referrals, {} orphans); nothing was written. \
             Apply it with `referral-operator check apply-repair --plan FILE`.",
            plan.updates.len(),
            report.cycles,
            report.self_referrals,
            report.orphans
        );
        print_json(&plan.to_file_json());
    } else {
        let mut printed = serde_json::to_value(&report).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut printed {
            map.insert("documentsRead".into(), json!(documents));
            map.insert("durationSeconds".into(), json!((seconds * 1000.0).round() / 1000.0));
            map.insert("summary".into(), json!(report.summary()));
        }
        print_json(&printed);
    }
    if let Some(cluster) = write {
        let status = success_status(&report, now());
        if let Err(e) = patch_chain_status(cluster, status).await {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
        eprintln!("wrote status.chainCheck of {}/{}: {}", cluster.namespace, cluster.name, report.summary());
        return EXIT_OK;
    }
    if report.violations > 0 { EXIT_FINDINGS } else { EXIT_OK }
}

/// Examples for the status: taken round-robin across kinds, so one kind with many
/// offenders does not hide the others.
pub fn status_examples(report: &ChainReport, limit: usize) -> Vec<String> {
    let mut kinds: Vec<FindingKind> = Vec::new();
    for example in &report.examples {
        if !kinds.contains(&example.kind) {
            kinds.push(example.kind);
        }
    }
    let mut out = Vec::new();
    for round in 0.. {
        let mut any = false;
        for kind in &kinds {
            if let Some(example) = report.examples.iter().filter(|e| e.kind == *kind).nth(round) {
                any = true;
                if out.len() < limit {
                    out.push(example.message.clone());
                }
            }
        }
        if !any || out.len() >= limit {
            break;
        }
    }
    out
}

/// `status.chainCheck` after a run. Applied whole, so what an earlier run wrote
/// (examples, a failure) and this one leaves out disappears.
pub fn success_status(report: &ChainReport, finished: Time) -> ChainCheckStatus {
    ChainCheckStatus {
        last_run: Some(finished),
        summary: Some(report.summary()),
        users: report.users,
        cycles: report.cycles,
        too_deep: report.records.tier_too_high,
        orphans: report.orphans,
        self_referrals: report.self_referrals,
        malformed: report.malformed.total(),
        bad_referral_records: report.records.bad(),
        referral_records: report.records.total,
        depths: report.depth_distribution.iter().map(|d| ChainDepthCount { depth: d.depth, users: d.users }).collect(),
        examples: status_examples(report, STATUS_EXAMPLES),
        warnings: report.warnings.clone(),
        failure: None,
    }
}

/// `status.chainCheck` after an attempt that could not run: the last successful
/// counts stay, the failure says why.
pub fn failure_status(previous: Option<&ChainCheckStatus>, reason: &str, message: &str, at: Time) -> ChainCheckStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.failure = Some(ChainCheckFailure { time: at, reason: reason.into(), message: message.into() });
    status
}

/// Writes `status.chainCheck` as its writer ([`super::status::apply`]).
async fn patch_chain_status(cluster: &ClusterSystem, chain_check: ChainCheckStatus) -> Result<(), CheckCommandError> {
    let writer = StatusWriter::ChainCheck;
    let status = ReferralSystemStatus { chain_check: Some(chain_check), ..ReferralSystemStatus::default() };
    super::status::apply(&cluster.api, &cluster.name, writer, &status).await.map_err(|e| {
        CheckCommandError::PatchStatus {
            namespace: cluster.namespace.clone(),
            name: cluster.name.clone(),
            reason: e.to_string(),
        }
    })
}

async fn record_failure(cluster: Option<&ClusterSystem>, reason: &str, message: &str) {
    let Some(cluster) = cluster else { return };
    let previous = cluster.status.as_ref().and_then(|s| s.chain_check.as_ref());
    if let Err(e) = patch_chain_status(cluster, failure_status(previous, reason, message, now())).await {
        eprintln!("error: {e}");
    }
}

async fn run_indexes(args: IndexesArgs) -> u8 {
    let (settings, _) = match settings(&args.source).await {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let Some(database) = settings.database.clone() else {
        eprintln!("error: {}", CheckCommandError::NoDatabase);
        return EXIT_ERROR;
    };
    let policy = match (args.policy, settings.policy) {
        (Some(PolicyArg::Ensure), _) => IndexPolicy::Ensure,
        (Some(PolicyArg::Report), _) => IndexPolicy::Report,
        (None, Some(policy)) => policy,
        // Standalone with no file: never write unless asked to.
        (None, None) => IndexPolicy::Report,
    };
    let timeout = Duration::from_secs(args.source.timeout.max(1));
    let client = match client_from_env(&args.source.uri_env, timeout, "referral-operator-check", None).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    match sync_indexes(&client, &database, &settings.indexes, policy).await {
        Ok(report) => {
            let mut printed = serde_json::to_value(&report).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut printed {
                map.insert("summary".into(), json!(report.summary()));
            }
            print_json(&printed);
            if report.all_in_place() { EXIT_OK } else { EXIT_FINDINGS }
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
    }
}

async fn run_apply_repair(args: ApplyRepairArgs) -> u8 {
    let text = match std::fs::read_to_string(&args.plan) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.plan.display());
            return EXIT_ERROR;
        }
    };
    let plan = match RepairPlan::from_file_json(&text) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {} is not a repair plan: {e}", args.plan.display());
            return EXIT_ERROR;
        }
    };
    // Every update is checked before the first one is sent.
    let checked = match plan.checked_updates() {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("error: {}: {e}; nothing was applied", args.plan.display());
            return EXIT_ERROR;
        }
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let client = match client_from_env(&args.uri_env, timeout, "referral-operator-repair", None).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    match apply_repair_plan(&client, &plan, &checked).await {
        Ok(outcome) => {
            print_json(&outcome);
            eprintln!(
                "applied {} of {} updates; {} skipped because the document changed since the plan was made",
                outcome.applied, outcome.total, outcome.skipped
            );
            if outcome.skipped > 0 { EXIT_FINDINGS } else { EXIT_OK }
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::chains::{ChainBuilder, ChainOptions, FieldValue, KeyRef};

    fn report() -> ChainReport {
        let mut builder = ChainBuilder::new(ChainOptions::default(), 0);
        let users: [(i64, Option<i64>); 5] = [(1, None), (2, Some(1)), (3, Some(3)), (4, Some(99)), (5, Some(98))];
        for (id, referred_by) in users {
            let referred_by = referred_by.map_or(FieldValue::Absent, |r| FieldValue::Key(KeyRef::Int(r)));
            builder.add_user(FieldValue::Key(KeyRef::Int(id)), referred_by, FieldValue::Absent).unwrap();
        }
        builder.finish().unwrap().report()
    }

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn the_success_status_counts_and_clears_what_an_earlier_run_left() {
        let status = success_status(&report(), at(1_800_000_000));
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(value["summary"], "3 violations");
        assert_eq!(value["users"], 5);
        assert_eq!(value["orphans"], 2);
        assert_eq!(value["selfReferrals"], 1);
        assert_eq!(value["depths"], json!([{"depth": 0, "users": 1}, {"depth": 1, "users": 3}]));
        assert_eq!(value["lastRun"], "2027-01-15T08:00:00Z");
        assert_eq!(status.examples.len(), 3);
        // Applied whole: an earlier failure and warnings are not in what is applied,
        // so the apply removes them.
        let earlier = ReferralSystemStatus {
            chain_check: Some(failure_status(Some(&status), "MongoUnreachable", "no server", at(0))),
            ..ReferralSystemStatus::default()
        };
        let applied = ReferralSystemStatus { chain_check: Some(status), ..ReferralSystemStatus::default() };
        let body = StatusWriter::ChainCheck.apply_body(&applied);
        assert!(body["status"]["chainCheck"].get("failure").is_none(), "{body}");
        assert!(body["status"]["chainCheck"].get("warnings").is_none(), "{body}");
        assert_eq!(
            StatusWriter::ChainCheck.leftovers(Some(&earlier), &applied),
            Some(json!({"status": {"chainCheck": {"failure": null}}})),
            "left by a merge patch, it is cleared"
        );
    }

    #[test]
    fn a_failure_keeps_the_last_counts() {
        let previous = ChainCheckStatus { users: 10, orphans: 2, ..ChainCheckStatus::default() };
        let value =
            serde_json::to_value(failure_status(Some(&previous), "MongoUnreachable", "no server", at(0))).unwrap();
        assert_eq!(value["users"], 10);
        assert_eq!(value["orphans"], 2);
        assert_eq!(value["failure"]["reason"], "MongoUnreachable");
        // With no earlier run the object is still complete (the schema requires the counts).
        let value = serde_json::to_value(failure_status(None, "AuthenticationFailed", "bad password", at(0))).unwrap();
        assert_eq!(value["users"], 0);
        assert_eq!(value["badReferralRecords"], 0);
    }

    #[test]
    fn status_examples_take_every_kind_first() {
        let mut report = report();
        report.examples = (0..30)
            .map(|i| crate::checks::chains::ChainExample {
                kind: if i < 25 { FindingKind::Orphan } else { FindingKind::Cycle },
                message: format!("m{i}"),
                users: Vec::new(),
            })
            .collect();
        let examples = status_examples(&report, 4);
        assert_eq!(examples, vec!["m0", "m25", "m1", "m26"]);
    }

    #[test]
    fn a_system_file_gives_database_model_and_depth() {
        let path = format!("{}/examples/full.yaml", env!("CARGO_MANIFEST_DIR"));
        let system = system_from_file(Path::new(&path)).unwrap();
        let settings = CheckSettings::from_system(&system);
        assert_eq!(settings.database.as_deref(), Some(system.spec.mongodb.database.as_str()));
        assert_eq!(settings.indexes.len(), 6);
        let missing = system_from_file(Path::new("/nonexistent/system.yaml")).unwrap_err();
        assert!(missing.to_string().starts_with("cannot read /nonexistent/system.yaml"), "{missing}");
    }
}
