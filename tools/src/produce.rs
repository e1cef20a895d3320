//! `gregor produce` (not yet written).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ProduceArgs {}

pub fn run(_args: ProduceArgs) -> ExitCode {
    eprintln!("gregor produce: not implemented yet");
    ExitCode::FAILURE
}
