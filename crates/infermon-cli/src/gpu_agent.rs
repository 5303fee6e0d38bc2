//! Placeholder until the subcommand lands.

#[derive(clap::Args)]
pub struct GpuAgentArgs {}

pub async fn run(_args: GpuAgentArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
