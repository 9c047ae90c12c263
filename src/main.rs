use clap::Parser;

fn main() -> std::process::ExitCode {
    if referral_operator::plugin::invoked_as_plugin() {
        return referral_operator::plugin::main();
    }
    referral_operator::cli::run(referral_operator::cli::Cli::parse())
}
