//! `gregor bench` (not yet written).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> ExitCode {
    eprintln!("gregor bench: not implemented yet");
    ExitCode::FAILURE
}
