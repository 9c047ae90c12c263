//! `backup drill`: the scheduled restore drill. The newest complete backup (on the
//! volume, or in the bucket when one is given) is verified and restored into a
//! scratch database, every collection counted against the manifest, the chain check
//! run on the restored data, and the scratch database dropped (whatever happened
//! before). With `--system` the result goes to `status.backup.lastVerifiedRestore` by
//! server-side apply as [`StatusWriter::RestoreDrill`], which owns that field only.
//!
//! It never writes to the production database: the scratch database is checked to
//! be another one ([`ScratchDatabase`]) before MongoDB is contacted, and the
//! production name is only ever used to refuse.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use serde_json::json;

use crate::backup::drill::ScratchDatabase;
use crate::backup::object::Redactor;
use crate::backup::restore::{RestorePlan, restore};
use crate::backup::retention::{RetentionPolicy, plan};
use crate::backup::store::{self, Listing, Manifest};
use crate::backup::target::{BackupSource, VolumeFolder};
use crate::checks::chain_source::check_chains;
use crate::crd::ReferralSystem;
use crate::crd::mongodb::ChainModel;
use crate::crd::status::{BackupStatus, DrillResult, ReferralSystemStatus, StatusWriter, VerifiedRestoreStatus};

use super::backup::Output;
use super::mongo_client::client_with_env_tls;
use super::native_backup::{MONGO_TIMEOUT, S3Args, read_uri, target_secrets, uri_redactor};
use super::termination;

/// Exit code when the drill ran and failed (and said so in status, with `--system`).
const EXIT_DRILL_FAILED: u8 = 1;
/// Exit code when the drill could not report (status not written, bad flags).
const EXIT_NOT_REPORTED: u8 = 2;

/// Flags of `backup drill`.
#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// The backup directory; the newest complete backup there is drilled (unless a
    /// bucket is given).
    #[arg(long, default_value = "/backups")]
    pub dir: PathBuf,
    /// The bucket to read the newest backup from instead of the directory.
    #[command(flatten)]
    pub s3: S3Args,
    /// The production database: never written; only to refuse a scratch database
    /// that is the same.
    #[arg(long, env = "MONGODB_DATABASE")]
    pub database: String,
    /// The database to restore into and drop afterwards.
    #[arg(long)]
    pub scratch_database: String,
    /// Environment variable holding the MongoDB connection string.
    #[arg(long, default_value = "MONGODB_URI")]
    pub uri_env: String,
    /// Write the result into this ReferralSystem's status.backup.lastVerifiedRestore
    /// (and take the chain model and maxChainDepth from it).
    #[arg(long)]
    pub system: Option<String>,
    /// Namespace of the ReferralSystem.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
}

/// What one drill found, before it is written anywhere.
#[derive(Debug, Clone)]
struct DrillOutcome {
    backup: Option<String>,
    source: Option<String>,
    result: DrillResult,
    message: String,
    documents: u64,
    chains: Option<String>,
}

impl DrillOutcome {
    fn failed(backup: Option<String>, source: Option<String>, message: String) -> DrillOutcome {
        DrillOutcome { backup, source, result: DrillResult::Failed, message, documents: 0, chains: None }
    }
}

/// Runs `backup drill`.
pub fn run_drill(args: DrillArgs) -> ExitCode {
    let runtime = match super::native_backup::runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            termination::fail(&e);
            return ExitCode::from(EXIT_NOT_REPORTED);
        }
    };
    runtime.block_on(drill_command(args))
}

async fn drill_command(args: DrillArgs) -> ExitCode {
    let cluster = match &args.system {
        Some(name) => match cluster_system(name, args.namespace.as_deref()).await {
            Ok(found) => Some(found),
            Err(e) => {
                termination::fail(&e);
                return ExitCode::from(EXIT_NOT_REPORTED);
            }
        },
        None => None,
    };
    let (model, max_depth) = match &cluster {
        Some((_, system)) => (system.spec.mongodb.chain_model.clone(), system.spec.referral.max_chain_depth),
        None => (ChainModel::default(), crate::crd::settings::DEFAULT_MAX_CHAIN_DEPTH),
    };
    let outcome = match ScratchDatabase::new(&args.scratch_database, &args.database) {
        // Refused before MongoDB is contacted.
        Err(refused) => DrillOutcome::failed(None, None, refused.to_string()),
        Ok(scratch) => drill(&args, &scratch, &model, max_depth).await,
    };
    print_outcome(args.output, &args.scratch_database, &outcome);
    if outcome.result == DrillResult::Failed {
        termination::record(&format!("restore drill failed: {}", outcome.message));
    }
    if let Some((api, system)) = &cluster {
        let name = system.metadata.name.clone().unwrap_or_default();
        let previous =
            system.status.as_ref().and_then(|s| s.backup.as_ref()).and_then(|b| b.last_verified_restore.as_ref());
        let status = drill_status(&outcome, previous, &args.scratch_database, Time(super::backup::now()));
        if let Err(e) = write_status(api, &name, status).await {
            termination::fail(format!(
                "the drill's result was not written to status.backup.lastVerifiedRestore of {name}: {e}"
            ));
            return ExitCode::from(EXIT_NOT_REPORTED);
        }
    }
    match outcome.result {
        DrillResult::Succeeded => ExitCode::SUCCESS,
        DrillResult::Failed => ExitCode::from(EXIT_DRILL_FAILED),
    }
}

/// Finds the newest backup, restores it into `scratch`, checks it, and drops
/// `scratch` whatever happened.
async fn drill(args: &DrillArgs, scratch: &ScratchDatabase, model: &ChainModel, max_depth: u8) -> DrillOutcome {
    let uri = match read_uri(&args.uri_env) {
        Ok(uri) => uri,
        Err(e) => return DrillOutcome::failed(None, None, e),
    };
    let mut secrets = uri_redactor(&uri);
    if args.s3.bucket.is_some() {
        secrets.extend(target_secrets());
    }
    let redactor = Redactor::new(secrets);
    let (name, location, source, manifest) = match newest_backup(args).await {
        Ok(found) => found,
        Err(e) => return DrillOutcome::failed(None, None, redactor.clean(&e)),
    };
    let failed = |message: String| DrillOutcome::failed(Some(name.clone()), Some(location.clone()), message);
    let plan = match RestorePlan::from_manifest(&manifest) {
        Ok(plan) => plan,
        Err(why) => {
            return failed(format!(
                "backup {name} in {location} cannot be drilled: {why} (the drill restores native backups; a Mongodump-method backup is restored with mongorestore)"
            ));
        }
    };
    let client = match client_with_env_tls(&args.uri_env, &uri, MONGO_TIMEOUT, "referral-operator-drill", None).await {
        Ok(client) => client,
        Err(e) => return failed(redactor.clean(&e.to_string())),
    };
    let db = client.database(scratch.name());
    // A drill killed midway leaves its scratch database; start from nothing.
    if let Err(e) = db.drop().await {
        return failed(format!(
            "cannot drop the scratch database {} before the drill: {} (does the MongoDB user have dropDatabase on it?)",
            scratch.name(),
            redactor.clean(&e.to_string())
        ));
    }
    let checked = restore_and_check(&client, source, &plan, scratch, model, max_depth, &redactor).await;
    let dropped = db.drop().await;
    let mut outcome = match checked {
        Ok((documents, collections, chains)) => DrillOutcome {
            backup: Some(name.clone()),
            source: Some(location.clone()),
            result: DrillResult::Succeeded,
            message: format!(
                "backup {name} from {location}: verified against its manifest, {collections} collections and {documents} documents restored into {} and counted, chain check {chains}; the scratch database was dropped",
                scratch.name()
            ),
            documents,
            chains: Some(chains),
        },
        Err(message) => failed(format!("backup {name} from {location}: {message}")),
    };
    if let Err(e) = dropped {
        outcome.result = DrillResult::Failed;
        outcome.message = format!(
            "{}; but the scratch database {} could not be dropped ({}): drop it by hand",
            outcome.message,
            scratch.name(),
            redactor.clean(&e.to_string())
        );
    }
    outcome
}

async fn restore_and_check(
    client: &mongodb::Client,
    source: Arc<dyn BackupSource>,
    plan: &RestorePlan,
    scratch: &ScratchDatabase,
    model: &ChainModel,
    max_depth: u8,
    redactor: &Redactor,
) -> Result<(u64, usize, String), String> {
    let report = restore(client, source, plan, scratch.name(), redactor).await.map_err(|e| {
        format!(
            "the restore into the scratch database failed: {e}. Nothing in production was touched. Run `referral-operator backup verify --name NAME` on it, take a new backup (annotation referral.dev/backup-now) and restore from an older backup if this is the one you need"
        )
    })?;
    let documents = report.collections.iter().map(|c| c.documents).sum();
    let collections = report.collections.len();
    // Only when the backup holds the users: the chain check reads them.
    if !report.collections.iter().any(|c| c.name == model.users_collection) {
        return Ok((
            documents,
            collections,
            format!("skipped: the backup holds no {} collection", model.users_collection),
        ));
    }
    let chains = check_chains(client, scratch.name(), model, max_depth, 3).await.map_err(|e| {
        format!(
            "restored and counted, but the chain check of the restored data could not run: {}",
            redactor.clean(&e.to_string())
        )
    })?;
    Ok((documents, collections, chains.report.summary()))
}

type Found = (String, String, Arc<dyn BackupSource>, Manifest);

/// The newest complete backup (the one `status.backup.latest` names: not dated in
/// the future), where it is, and its manifest.
async fn newest_backup(args: &DrillArgs) -> Result<Found, String> {
    let target = args.s3.connect().map_err(|e| e.to_string())?;
    let listing: Listing = match &target {
        Some(target) => target.list().await.map_err(|e| e.to_string())?,
        None => store::list(&args.dir).map_err(|e| e.to_string())?,
    };
    let location = match &target {
        Some(target) => target.location().to_string(),
        None => args.dir.display().to_string(),
    };
    let any = RetentionPolicy { daily: 1, weekly: 0, monthly: 0 };
    let newest = plan(&listing.entries(), any, super::backup::now()).anchor.ok_or_else(|| {
        format!(
            "no complete backup in {location} to drill: take one (annotation referral.dev/backup-now) and look at the backup Jobs"
        )
    })?;
    let (source, manifest): (Arc<dyn BackupSource>, Manifest) = match &target {
        Some(target) => {
            (Arc::new(target.run(&newest)), target.read_manifest(&newest).await.map_err(|e| e.to_string())?)
        }
        None => (
            Arc::new(VolumeFolder::new(args.dir.join(&newest))),
            store::complete_manifest(&args.dir, &newest).map_err(|e| e.to_string())?,
        ),
    };
    Ok((newest, location, source, manifest))
}

/// `status.backup.lastVerifiedRestore` after a drill: the newest verified backup is
/// this one when it passed, else the one an earlier drill verified.
fn drill_status(
    outcome: &DrillOutcome,
    previous: Option<&VerifiedRestoreStatus>,
    scratch: &str,
    at: Time,
) -> VerifiedRestoreStatus {
    let verified_backup = match outcome.result {
        DrillResult::Succeeded => outcome.backup.clone(),
        DrillResult::Failed => previous.and_then(|p| p.verified_backup.clone()),
    };
    VerifiedRestoreStatus {
        time: at,
        backup: outcome.backup.clone(),
        result: outcome.result,
        message: truncate(&outcome.message, 2000),
        source: outcome.source.clone(),
        scratch_database: scratch.to_string(),
        documents: outcome.documents,
        chains: outcome.chains.clone(),
        verified_backup,
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

async fn cluster_system(name: &str, namespace: Option<&str>) -> Result<(Api<ReferralSystem>, ReferralSystem), String> {
    let namespace = namespace.ok_or("--system needs --namespace (or POD_NAMESPACE)")?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot build a Kubernetes client (in-cluster or KUBECONFIG): {e}"))?;
    let api = Api::<ReferralSystem>::namespaced(client, namespace);
    let system = api.get(name).await.map_err(|e| format!("cannot read ReferralSystem {namespace}/{name}: {e}"))?;
    Ok((api, system))
}

async fn write_status(api: &Api<ReferralSystem>, name: &str, drill: VerifiedRestoreStatus) -> Result<(), kube::Error> {
    let backup = BackupStatus { last_verified_restore: Some(drill), ..BackupStatus::default() };
    let status = ReferralSystemStatus { backup: Some(backup), ..ReferralSystemStatus::default() };
    super::status::apply(api, name, StatusWriter::RestoreDrill, &status).await
}

fn print_outcome(output: Output, scratch: &str, outcome: &DrillOutcome) {
    match output {
        Output::Json => println!(
            "{}",
            json!({"backup": outcome.backup, "source": outcome.source, "scratchDatabase": scratch,
                   "result": outcome.result, "message": outcome.message, "documents": outcome.documents,
                   "chains": outcome.chains})
        ),
        Output::Text => match outcome.result {
            DrillResult::Succeeded => println!("restore drill succeeded: {}", outcome.message),
            DrillResult::Failed => eprintln!("error: restore drill failed: {}", outcome.message),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_drill_keeps_the_last_verified_backup_and_a_passed_one_replaces_it() {
        let at = Time("2027-01-17T04:10:00Z".parse().unwrap());
        let passed = DrillOutcome {
            backup: Some("20270117T010000Z".into()),
            source: Some("/backups".into()),
            result: DrillResult::Succeeded,
            message: "ok".into(),
            documents: 5,
            chains: Some("OK".into()),
        };
        let first = drill_status(&passed, None, "neurolov_drill", at.clone());
        assert_eq!(first.verified_backup.as_deref(), Some("20270117T010000Z"));
        let failed = DrillOutcome::failed(Some("20270124T010000Z".into()), None, "bad".into());
        let second = drill_status(&failed, Some(&first), "neurolov_drill", at.clone());
        assert_eq!(second.result, DrillResult::Failed);
        assert_eq!(second.backup.as_deref(), Some("20270124T010000Z"));
        assert_eq!(second.verified_backup.as_deref(), Some("20270117T010000Z"), "carried over");
        assert_eq!(drill_status(&failed, None, "x", at).verified_backup, None);
    }
}
