//! The command line: parse, dispatch, exit code. Each subcommand's work lives in its
//! own module; this file only wires flags to it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::reconcilers::BuildContext;
use crate::render::{RenderOptions, render};

/// The default of `--operator-image` (`run`, `render`).
pub use crate::controller::context::DEFAULT_OPERATOR_IMAGE;

#[derive(Debug, Parser)]
#[command(
    name = "referral-operator",
    version,
    about = "Runs referral systems on Kubernetes from one ReferralSystem resource"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: watch ReferralSystems and keep their children in line.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions (ReferralSystem, ReferralRestore) as YAML.
    Crd,
    /// Print every object the operator would create for the ReferralSystems in a file,
    /// with no cluster: the GitOps preview.
    Render {
        /// File with one or more ReferralSystem documents; `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Namespace for systems whose file names none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Image of this operator, run by the chain-check and backup jobs.
        #[arg(long, env = "REFERRAL_OPERATOR_IMAGE", default_value = DEFAULT_OPERATOR_IMAGE)]
        operator_image: String,
        /// Namespace of the operator's pods, as `run` is told by the chart: the
        /// managed Redis' NetworkPolicy lets them in. Needs --operator-pod-labels.
        #[arg(long, requires = "operator_pod_labels")]
        operator_namespace: Option<String>,
        /// Labels of the operator's pods (`k=v,k=v`), as `run` is told by the chart.
        #[arg(long, requires = "operator_namespace", value_parser = label_map)]
        operator_pod_labels: Option<std::collections::BTreeMap<String, String>>,
    },
    /// The kubectl plugin's commands: what `kubectl referral ...` runs when this binary
    /// is installed (or linked) as `kubectl-referral`.
    Plugin(crate::plugin::PluginArgs),

    /// Backups on a backup volume: list, prune by retention, finalize a run, verify one.
    #[command(subcommand)]
    Backup(crate::commands::backup::BackupCommand),
    /// Check a referral system's MongoDB: declared indexes, referral-chain integrity,
    /// and applying a chain repair plan. Exit 0 sound, 1 problems found, 2 could not run.
    #[command(subcommand)]
    Check(crate::commands::check::CheckCommand),
    /// Measure the chain check on a synthetic population (CPU, memory, documents/s).
    #[command(subcommand)]
    Bench(crate::commands::bench::BenchCommand),
}

/// Flags of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Watch only this namespace (repeatable, or comma-separated in WATCH_NAMESPACES);
    /// all namespaces when not given.
    #[arg(short = 'n', long = "namespace", env = "WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Hold a Lease before writing, so several replicas are safe.
    #[arg(long)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "referral-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Image of this operator, run by the chain-check and backup jobs.
    #[arg(long, env = "REFERRAL_OPERATOR_IMAGE", default_value = DEFAULT_OPERATOR_IMAGE)]
    pub operator_image: String,
    /// File holding the key (at least 16 bytes) of the secrets hash that pod
    /// templates carry; the chart mounts it from a Secret only the operator reads.
    /// Without it a random key is drawn, and every such pod rolls when the operator
    /// restarts.
    #[arg(long, env = "REFOP_SECRETS_HASH_KEY_FILE")]
    pub secrets_hash_key_file: Option<std::path::PathBuf>,
    /// Labels that select this operator's pods (`k=v,k=v`; the chart sets them), in
    /// the namespace POD_NAMESPACE names: the NetworkPolicies it writes let them in.
    /// Unset outside a cluster.
    #[arg(long, env = "OPERATOR_POD_LABELS", value_parser = label_map)]
    pub operator_pod_labels: Option<std::collections::BTreeMap<String, String>>,
    /// Log as JSON lines instead of text.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Re-check a Ready system after this long even when nothing changes (picks up a
    /// rotated Secret, which is read by name and not watched, and MongoDB or Redis
    /// going away), doubled for each re-check that finds nothing new, up to
    /// --recheck-max-interval. Go-style duration.
    #[arg(long, default_value = "5m", value_parser = resync_interval)]
    pub resync_ready: std::time::Duration,
    /// The same for a system that is not Ready.
    #[arg(long, default_value = "30s", value_parser = resync_interval)]
    pub resync_not_ready: std::time::Duration,
    /// Ceiling of the re-check back-off.
    #[arg(long, default_value = "10m", value_parser = resync_interval)]
    pub recheck_max_interval: std::time::Duration,
    /// Re-checks started per second at most, however many systems there are; news
    /// (a changed spec, a child's event) is never held by it.
    #[arg(long, default_value_t = crate::controller::context::DEFAULT_RECHECK_BUDGET, value_parser = recheck_budget)]
    pub recheck_budget: f64,
    /// Probe each MongoDB and Redis that answers at most this often, however many systems
    /// use it (one that fails is probed again after 4-5 s).
    #[arg(long, default_value = "30s", value_parser = resync_interval)]
    pub probe_interval: std::time::Duration,
    /// Reconciles running at once per watched namespace (or in all, cluster-wide).
    #[arg(long, default_value_t = crate::controller::context::DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Wait this long after the last change of a system or its children before
    /// reconciling it, so a burst of changes (a new system's children appearing one
    /// by one) costs one reconcile instead of one each. 0s reconciles at once.
    #[arg(long, default_value = "0s", value_parser = debounce_interval)]
    pub debounce: std::time::Duration,
}

/// Labels as `key=value,key=value`, each key and value non-empty and without spaces.
fn label_map(value: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut labels = std::collections::BTreeMap::new();
    for pair in value.split(',').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, val)) if !key.is_empty() && !val.is_empty() && !pair.contains(char::is_whitespace) => {
                labels.insert(key.to_string(), val.to_string());
            }
            _ => return Err(format!("{pair:?} is not key=value (labels are key=value,key=value)")),
        }
    }
    if labels.is_empty() {
        return Err("no labels given (expected key=value,key=value)".into());
    }
    Ok(labels)
}

/// A debounce: a duration of at most a minute. Changes keep pushing a debounced
/// reconcile back, so a long one could hide a system that changes often.
fn debounce_interval(value: &str) -> Result<std::time::Duration, String> {
    let interval = crate::crd::duration::parse_duration(value).map_err(|e| e.to_string())?;
    if interval > std::time::Duration::from_secs(60) {
        return Err(format!("{value:?} is longer than 1m; a system that keeps changing would never be reconciled"));
    }
    Ok(interval)
}

/// Re-checks per second: above zero (zero would never re-check) and at most 10,000.
fn recheck_budget(value: &str) -> Result<f64, String> {
    let budget: f64 = value.parse().map_err(|_| format!("{value:?} is not a number of re-checks per second"))?;
    if !(budget > 0.0 && budget <= 10_000.0) {
        return Err(format!("{value:?} is not between 0 (exclusive) and 10000 re-checks per second"));
    }
    Ok(budget)
}

/// A resync interval: a duration of at least one second (shorter would hot-loop).
fn resync_interval(value: &str) -> Result<std::time::Duration, String> {
    let interval = crate::crd::duration::parse_duration(value).map_err(|e| e.to_string())?;
    if interval < std::time::Duration::from_secs(1) {
        return Err(format!("{value:?} is shorter than 1s; a resync that often would hot-loop"));
    }
    Ok(interval)
}

/// Log output formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: `kubectl logs` and log collectors read a pipe, where
    // escape codes would be noise in every line.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn run_controller(args: RunArgs) -> ExitCode {
    use crate::controller::secrets::HashKey;
    let RunArgs {
        namespaces,
        listen,
        leader_elect,
        lease_name,
        lease_namespace,
        identity,
        operator_image,
        secrets_hash_key_file,
        operator_pod_labels,
        log_format,
        resync_ready,
        resync_not_ready,
        recheck_max_interval,
        recheck_budget,
        probe_interval,
        concurrency,
        debounce,
    } = args;
    init_logging(log_format);
    let secrets_hash_key = match secrets_hash_key_file.as_deref().map(HashKey::from_file) {
        Some(Ok(key)) => key,
        Some(Err(e)) => {
            tracing::error!(error = %e, "the controller cannot start");
            return ExitCode::FAILURE;
        }
        None => {
            tracing::warn!(
                "no --secrets-hash-key-file: the secrets hash uses a random key, so every pod template \
                 that carries it changes (and its pods roll) when the operator restarts"
            );
            match HashKey::random() {
                Ok(key) => key,
                Err(e) => {
                    tracing::error!(error = %e, "the controller cannot start");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let identity = identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("referral-operator-{}", std::process::id()));
    let config = crate::controller::run::RunConfig {
        namespaces: namespaces.into_iter().filter(|n| !n.is_empty()).collect(),
        listen,
        settings: crate::controller::context::ControllerSettings {
            operator_image,
            operator_pods: operator_pod_labels
                .map(|labels| crate::reconcilers::OperatorPods { namespace: lease_namespace.clone(), labels }),
            resync_ready,
            resync_not_ready,
            recheck_max_interval,
            recheck_budget,
            probe_interval,
            concurrency,
            debounce,
            secrets_hash_key,
            ..crate::controller::context::ControllerSettings::default()
        },
        lease: leader_elect.then(|| crate::controller::leader::LeaseConfig {
            namespace: lease_namespace,
            name: lease_name,
            identity,
            lease_duration: std::time::Duration::from_secs(15),
            renew_every: std::time::Duration::from_secs(5),
        }),
        discovery_interval: std::time::Duration::from_secs(300),
    };
    crate::controller::allocator::tune_for_bursts();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::controller::run::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the controller stopped");
            ExitCode::FAILURE
        }
    }
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let Cli { command } = cli;
    match command {
        Command::Run(args) => run_controller(args),
        Command::Plugin(args) => crate::plugin::run(args),
        Command::Backup(command) => crate::commands::backup::run(command),
        Command::Check(command) => crate::commands::check::run(command),
        Command::Bench(command) => crate::commands::bench::run(command),
        Command::Crd => {
            print!("{}", crate::crd::all_definitions_yaml());
            ExitCode::SUCCESS
        }
        Command::Render { file, namespace, operator_image, operator_namespace, operator_pod_labels } => {
            let input = if file.as_os_str() == "-" {
                crate::render::read_input(std::io::stdin())
            } else {
                std::fs::File::open(&file)
                    .map_err(crate::render::RenderReadError::Io)
                    .and_then(crate::render::read_input)
            };
            let input = match input {
                Ok(text) => text,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let options = RenderOptions {
                default_namespace: namespace,
                context: BuildContext {
                    operator_image,
                    secrets_hash: None,
                    operator_pods: operator_namespace
                        .zip(operator_pod_labels)
                        .map(|(namespace, labels)| crate::reconcilers::OperatorPods { namespace, labels }),
                },
            };
            match render(&input, &options) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, Command};
    use clap::Parser;
    use std::time::Duration;

    fn run_args(extra: &[&str]) -> Result<super::RunArgs, clap::Error> {
        let mut argv = vec!["referral-operator", "run"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn resync_intervals_default_to_five_minutes_and_thirty_seconds_and_refuse_hot_loops() {
        let args = run_args(&[]).unwrap();
        assert_eq!((args.resync_ready, args.resync_not_ready), (Duration::from_secs(300), Duration::from_secs(30)));
        let args = run_args(&["--resync-ready=5s", "--resync-not-ready=1m30s"]).unwrap();
        assert_eq!((args.resync_ready, args.resync_not_ready), (Duration::from_secs(5), Duration::from_secs(90)));
        let error = run_args(&["--resync-ready=500ms"]).unwrap_err().to_string();
        assert!(error.contains("shorter than 1s"), "{error}");
        assert!(run_args(&["--resync-not-ready=soon"]).is_err());
    }

    #[test]
    fn rechecks_are_bounded_by_default_and_refuse_a_budget_of_nothing_or_a_hot_loop() {
        let args = run_args(&[]).unwrap();
        assert_eq!(args.recheck_budget, crate::controller::context::DEFAULT_RECHECK_BUDGET);
        assert_eq!(
            (args.recheck_max_interval, args.probe_interval),
            (Duration::from_secs(600), Duration::from_secs(30))
        );
        let args = run_args(&["--recheck-budget=2.5", "--recheck-max-interval=1h", "--probe-interval=1m"]).unwrap();
        assert_eq!(args.recheck_budget, 2.5);
        assert_eq!(
            (args.recheck_max_interval, args.probe_interval),
            (Duration::from_secs(3600), Duration::from_secs(60))
        );
        for bad in ["--recheck-budget=0", "--recheck-budget=-1", "--recheck-budget=NaN", "--recheck-budget=inf"] {
            assert!(run_args(&[bad]).is_err(), "{bad} was accepted");
        }
        assert!(run_args(&["--probe-interval=10ms"]).is_err());
        assert!(run_args(&["--recheck-max-interval=0s"]).is_err());
    }

    #[test]
    fn reconcile_concurrency_is_bounded_by_default_and_never_zero() {
        assert_eq!(run_args(&[]).unwrap().concurrency, crate::controller::context::DEFAULT_CONCURRENCY);
        assert_eq!(run_args(&["--concurrency=4"]).unwrap().concurrency, 4);
        assert!(run_args(&["--concurrency=0"]).is_err(), "0 means unbounded to kube-runtime");
    }

    #[test]
    fn debounce_is_a_short_duration() {
        assert_eq!(run_args(&["--debounce=1500ms"]).unwrap().debounce, std::time::Duration::from_millis(1500));
        assert_eq!(run_args(&["--debounce=0s"]).unwrap().debounce, std::time::Duration::ZERO);
        let too_long = run_args(&["--debounce=5m"]).unwrap_err().to_string();
        assert!(too_long.contains("longer than 1m"), "{too_long}");
        assert!(run_args(&["--debounce=soon"]).is_err());
    }
}
