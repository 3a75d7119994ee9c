//! The `inferq` binary: the zoo's default models behind the standard
//! commands, plus the load generators (`bench/`), which live here rather than
//! in the library so that a user's own model binary does not carry them.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use inferq::model_zoo::{default_models, ModelFactory};

#[path = "../bench/mod.rs"]
mod bench;

/// mimalloc gives freed memory back; glibc's per-thread arenas held on to
/// hundreds of MB under a flood of large requests (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "inferq",
    version,
    about = "Model-inference serving: gateway, queue, dispatchers"
)]
struct Cli {
    #[command(flatten)]
    settings: inferq::cli::SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Serve(inferq::cli::Command),
    /// Load generator: signed requests at a fixed concurrency.
    Bench(bench::BenchArgs),
    /// The bare model's speed, in process (no gateway, queue or dispatcher).
    BenchModel(bench::model::BenchModelArgs),
    /// Load on an asynchronous service: puts from several clients, results
    /// watched from the sink; put/s, result/s, latencies.
    BenchAsync(bench::async_load::BenchAsyncArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(command) => {
            let factory: ModelFactory = Arc::new(default_models);
            inferq::cli::block_on(inferq::cli::execute(cli.settings, command, factory))
        }
        Command::Bench(args) => inferq::cli::block_on(bench::run(args)),
        Command::BenchAsync(args) => inferq::cli::block_on(bench::async_load::run(args)),
        Command::BenchModel(args) => inferq::cli::block_on(async move {
            let settings = cli.settings.load()?;
            tokio::task::block_in_place(|| bench::model::run(&settings, args))
        }),
    }
}
