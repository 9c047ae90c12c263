//! `kubectl referral`: the kubectl plugin face of this binary. Installed as (or
//! linked to) a file named `kubectl-referral` on the PATH, kubectl runs it for
//! `kubectl referral ...`; `referral-operator plugin ...` runs the same commands.
//!
//! - `status NAME [-o json]`: what the system is doing, for a person or a script;
//! - `backup now NAME`, `check now NAME`: ask the operator for one run now, through
//!   the `referral.dev/backup-now` / `referral.dev/check-now` annotations;
//! - `pause NAME`, `resume NAME`: set `spec.paused`, a break-glass switch (under
//!   GitOps, Git wins).
//!
//! The plugin acts with the credentials of the person running it (their
//! kubeconfig), never the operator's. It writes only the fields above: never
//! status, never other parts of spec.

pub mod requests;
pub mod summary;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};

use crate::crd::ReferralSystem;

use requests::{RunNow, RunNowWording};

/// File name kubectl looks for on the PATH for `kubectl referral`.
pub const PLUGIN_FILE_NAME: &str = "kubectl-referral";
/// Field manager of the plugin's writes, so `managedFields` shows who paused a system.
pub const FIELD_MANAGER: &str = "kubectl-referral";

/// Whether this process was started as `kubectl-referral` (by kubectl, or by hand).
pub fn invoked_as_plugin() -> bool {
    std::env::args_os().next().is_some_and(|argv0| is_plugin_path(Path::new(&argv0)))
}

fn is_plugin_path(path: &Path) -> bool {
    path.file_stem().is_some_and(|stem| stem == PLUGIN_FILE_NAME)
}

/// Entry point when started as `kubectl-referral`: parses the whole command line as
/// the plugin's.
pub fn main() -> ExitCode {
    use clap::Parser;
    run(PluginArgs::parse())
}

/// `kubectl referral`: status, run-now requests and pause for ReferralSystems.
#[derive(Debug, clap::Parser)]
#[command(
    name = "kubectl referral",
    bin_name = "kubectl referral",
    version,
    about = "Status, run-now requests and pause for ReferralSystems (referral.dev)",
    after_help = "Under GitOps (Argo CD, Flux) Git wins: `pause` is for break-glass moments; commit spec.paused to Git for anything longer."
)]
pub struct PluginArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// Where to find the cluster and the system.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Namespace of the ReferralSystem; defaults to the kubeconfig context's namespace.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Kubeconfig file to use instead of KUBECONFIG or ~/.kube/config.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Summarise a ReferralSystem: conditions with reasons, workers, Redis, indexes,
    /// the last chain check with example offenders, and backups.
    Status {
        /// Name of the ReferralSystem.
        name: String,
        /// Output format: text for people (80 columns), json for scripts.
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Backups: `backup now NAME` asks for one backup now.
    Backup {
        #[command(subcommand)]
        action: NowAction,
    },
    /// Chain integrity checks: `check now NAME` asks for one check now.
    Check {
        #[command(subcommand)]
        action: NowAction,
    },
    /// Stop the operator changing this system's children (status stays live).
    Pause {
        /// Name of the ReferralSystem.
        name: String,
    },
    /// Let the operator change this system's children again.
    Resume {
        /// Name of the ReferralSystem.
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum NowAction {
    /// Ask the operator for one run now.
    Now {
        /// Name of the ReferralSystem.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Why a plugin command failed. Each names the operation and the object.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("reading kubeconfig {path}: {source}")]
    ReadKubeconfig { path: PathBuf, source: kube::config::KubeconfigError },
    #[error("loading the kubeconfig: {source}")]
    LoadKubeconfig { source: kube::config::KubeconfigError },
    #[error("finding a cluster (KUBECONFIG, ~/.kube/config or in-cluster): {source}")]
    InferConfig { source: kube::config::InferConfigError },
    #[error("building a Kubernetes client: {source}")]
    Client { source: kube::Error },
    #[error("referralsystem {name:?} not found in namespace {namespace:?}")]
    NotFound { name: String, namespace: String },
    /// `system` is `namespace/name`.
    #[error("reading referralsystem {system}: {source}")]
    Read { system: String, source: kube::Error },
    #[error("{what} on referralsystem {system}: {source}")]
    Patch { what: &'static str, system: String, source: kube::Error },
    #[error("writing the output: {source}")]
    Output { source: std::io::Error },
}

/// Runs one plugin command and returns the exit code: 0 done, 1 failed, 2 bad usage
/// (clap's, before this runs).
pub fn run(args: PluginArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A client and the namespace to act in, from the flags and the kubeconfig.
async fn connect(target: &Target) -> Result<(Client, String), PluginError> {
    let options = KubeConfigOptions { context: target.context.clone(), cluster: None, user: None };
    let config = match (&target.kubeconfig, &target.context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|source| PluginError::ReadKubeconfig { path: path.clone(), source })?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|source| PluginError::LoadKubeconfig { source })?
        }
        (None, Some(_)) => {
            Config::from_kubeconfig(&options).await.map_err(|source| PluginError::LoadKubeconfig { source })?
        }
        (None, None) => Config::infer().await.map_err(|source| PluginError::InferConfig { source })?,
    };
    let namespace = target.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|source| PluginError::Client { source })?;
    Ok((client, namespace))
}

async fn get(api: &Api<ReferralSystem>, name: &str, namespace: &str) -> Result<ReferralSystem, PluginError> {
    api.get_opt(name)
        .await
        .map_err(|source| PluginError::Read { system: format!("{namespace}/{name}"), source })?
        .ok_or_else(|| PluginError::NotFound { name: name.into(), namespace: namespace.into() })
}

fn patch_params() -> PatchParams {
    PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() }
}

fn print(text: &str) -> Result<(), PluginError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(|source| PluginError::Output { source })
}

async fn execute(args: PluginArgs) -> Result<(), PluginError> {
    let PluginArgs { target, command } = args;
    let (client, namespace) = connect(&target).await?;
    let api = Api::<ReferralSystem>::namespaced(client, &namespace);
    match command {
        PluginCommand::Status { name, output } => {
            let system = get(&api, &name, &namespace).await?;
            let text = match output {
                OutputFormat::Text => summary::human(&system, k8s_openapi::jiff::Timestamp::now()),
                // A Value of maps, strings and numbers always serialises.
                OutputFormat::Json => serde_json::to_string_pretty(&summary::json(&system)).unwrap_or_default() + "\n",
            };
            print(&text)
        }
        PluginCommand::Backup { action: NowAction::Now { name } } => {
            request(&api, &namespace, &name, RunNow::Backup).await
        }
        PluginCommand::Check { action: NowAction::Now { name } } => {
            request(&api, &namespace, &name, RunNow::Check).await
        }
        PluginCommand::Pause { name } => set_paused(&api, &namespace, &name, true).await,
        PluginCommand::Resume { name } => set_paused(&api, &namespace, &name, false).await,
    }
}

async fn request(api: &Api<ReferralSystem>, namespace: &str, name: &str, run: RunNow) -> Result<(), PluginError> {
    // Read first: a patch on a missing object would say only "not found".
    get(api, name, namespace).await?;
    let token = requests::token(k8s_openapi::jiff::Timestamp::now());
    api.patch(name, &patch_params(), &Patch::Merge(requests::run_now_patch(run, &token))).await.map_err(|source| {
        PluginError::Patch { what: run.operation(), system: format!("{namespace}/{name}"), source }
    })?;
    print(&format!(
        "referralsystem.referral.dev/{name}: {}\n  {}={token}\n  The operator starts one {} Job. Follow it with:\n  kubectl referral status {name} -n {namespace}\n",
        run.done(),
        run.annotation(),
        run.job(),
    ))
}

async fn set_paused(api: &Api<ReferralSystem>, namespace: &str, name: &str, paused: bool) -> Result<(), PluginError> {
    let system = get(api, name, namespace).await?;
    if system.spec.paused == paused {
        return print(&format!(
            "referralsystem.referral.dev/{name} is already {}\n",
            if paused { "paused" } else { "running (not paused)" }
        ));
    }
    api.patch(name, &patch_params(), &Patch::Merge(requests::paused_patch(paused))).await.map_err(|source| {
        PluginError::Patch {
            what: if paused { "pausing" } else { "resuming" },
            system: format!("{namespace}/{name}"),
            source,
        }
    })?;
    print(&format!("referralsystem.referral.dev/{name} {}\n", if paused { "paused" } else { "resumed" }))?;
    if let Some(manager) = requests::gitops_manager(system.annotations(), system.labels()) {
        eprintln!(
            "warning: {name} is managed by {manager}: Git wins, and self-heal will put spec.paused back to what \
             Git says. Use this only as a break-glass switch; commit spec.paused to Git for anything longer."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_plugin_is_chosen_by_its_file_name() {
        assert!(is_plugin_path(Path::new("/usr/local/bin/kubectl-referral")));
        assert!(is_plugin_path(Path::new("kubectl-referral")));
        assert!(is_plugin_path(Path::new("C:/bin/kubectl-referral.exe")));
        assert!(!is_plugin_path(Path::new("/usr/bin/referral-operator")));
        assert!(!is_plugin_path(Path::new("/usr/bin/kubectl-referral-helper")));
    }

    #[test]
    fn kubectl_style_command_lines_parse() {
        let args = PluginArgs::parse_from(["kubectl-referral", "status", "main", "-n", "referrals", "-o", "json"]);
        assert_eq!(args.target.namespace.as_deref(), Some("referrals"));
        assert!(
            matches!(args.command, PluginCommand::Status { ref name, output: OutputFormat::Json } if name == "main")
        );
        let args = PluginArgs::parse_from(["kubectl-referral", "-n", "x", "backup", "now", "main"]);
        assert_eq!(args.target.namespace.as_deref(), Some("x"));
        assert!(
            matches!(args.command, PluginCommand::Backup { action: NowAction::Now { ref name } } if name == "main")
        );
        let args = PluginArgs::parse_from(["kubectl-referral", "check", "now", "main", "--context", "prod"]);
        assert_eq!(args.target.context.as_deref(), Some("prod"));
        assert!(PluginArgs::try_parse_from(["kubectl-referral", "backup", "main"]).is_err(), "`now` is required");
        assert!(PluginArgs::try_parse_from(["kubectl-referral", "status"]).is_err(), "a name is required");
        assert!(PluginArgs::try_parse_from(["kubectl-referral", "status", "a", "-o", "yaml"]).is_err());
    }
}
