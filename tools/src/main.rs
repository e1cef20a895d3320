//! The `gregor` command. Each subcommand lives in its own module with its own clap `Args`
//! and a `run` function; this file only parses and dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keeps hostile Kafka requests (huge declared array lengths) from aborting the broker.
#[global_allocator]
static ALLOCATOR: gregor_net::alloc::GuardedAlloc = gregor_net::alloc::GuardedAlloc;

mod bench;
mod broker;
mod consume;
mod groups;
mod produce;
mod topics;

#[derive(Parser)]
#[command(
    name = "gregor",
    version,
    about = "Gregor: a Kafka-compatible streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (defaults: data in ./data, listener 127.0.0.1:9092, all cores).
    Broker(broker::BrokerArgs),
    /// Create, list, describe, alter and delete topics (any Kafka-protocol broker).
    Topics(topics::TopicsArgs),
    /// Console producer: one record per input line (any Kafka-protocol broker).
    Produce(produce::ProduceArgs),
    /// Console consumer (any Kafka-protocol broker).
    Consume(consume::ConsumeArgs),
    /// List, describe and delete consumer groups; reset their offsets (any Kafka-protocol broker).
    Groups(groups::GroupsArgs),
    /// Load tools: produce, consume, e2e and disk benchmarks (any Kafka-protocol broker).
    Bench(bench::BenchArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GREGOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: log files and CI output stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The broker sets up logging itself, from its `log.level` setting.
    if !matches!(cli.command, Command::Broker(_)) {
        init_tracing();
    }
    match cli.command {
        Command::Broker(args) => broker::run(args),
        Command::Topics(args) => topics::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Groups(args) => groups::run(args),
    }
}
