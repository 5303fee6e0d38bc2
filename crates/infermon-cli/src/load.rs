//! Placeholder until the subcommand lands.

#[derive(clap::Args)]
pub struct LoadArgs {}

pub async fn run(_args: LoadArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
