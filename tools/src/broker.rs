//! `gregor broker` (not yet written).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct BrokerArgs {}

pub fn run(_args: BrokerArgs) -> ExitCode {
    eprintln!("gregor broker: not implemented yet");
    ExitCode::FAILURE
}
