//! `infermon`: run the engine simulator, drive load, watch a live demo, export GPU telemetry.

mod demo;
mod gpu_agent;
mod load;
mod sim;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "infermon", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the simulated inference engine (OpenAI-compatible HTTP API).
    Sim(sim::SimArgs),
    /// Drive load against OpenAI-compatible endpoints and report latency percentiles.
    Load(load::LoadArgs),
    /// Simulator and load generator in one process, with a live terminal summary.
    Demo(demo::DemoArgs),
    /// Export NVIDIA GPU telemetry (NVML) over OTLP.
    GpuAgent(gpu_agent::GpuAgentArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Sim(args) => sim::run(args).await,
            Command::Load(args) => load::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::GpuAgent(args) => gpu_agent::run(args).await,
        }
    })
}
