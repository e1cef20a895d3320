//! `gregor consume` (not yet written).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ConsumeArgs {}

pub fn run(_args: ConsumeArgs) -> ExitCode {
    eprintln!("gregor consume: not implemented yet");
    ExitCode::FAILURE
}
