use clap::Parser;

fn main() -> std::process::ExitCode {
    referral_operator::cli::run(referral_operator::cli::Cli::parse())
}
