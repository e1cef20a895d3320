//! `gregor topics` (not yet written).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct TopicsArgs {}

pub fn run(_args: TopicsArgs) -> ExitCode {
    eprintln!("gregor topics: not implemented yet");
    ExitCode::FAILURE
}
