//! The command line: parse, dispatch, exit code. Each subcommand's work lives in its
//! own module; this file only wires flags to it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::reconcilers::BuildContext;
use crate::render::{RenderOptions, render};

/// Image the chain-check and backup jobs run unless told otherwise.
pub const DEFAULT_OPERATOR_IMAGE: &str = concat!("ghcr.io/referral-dev/referral-operator:v", env!("CARGO_PKG_VERSION"));

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
    /// Print the ReferralSystem CustomResourceDefinition as YAML.
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
    },
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let Cli { command } = cli;
    match command {
        Command::Crd => {
            print!("{}", crate::crd::definition_yaml());
            ExitCode::SUCCESS
        }
        Command::Render { file, namespace, operator_image } => {
            let input = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
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
                context: BuildContext { operator_image, secrets_hash: None },
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
