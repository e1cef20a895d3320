//! `gregor bench produce|consume|e2e|disk|suite`: the load tools of the `gregor-bench` crate.

use std::process::ExitCode;

/// `gregor bench` arguments (defined next to the load tools).
pub type BenchArgs = gregor_bench::load::BenchArgs;

/// Runs `gregor bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    gregor_bench::load::run(args)
}
