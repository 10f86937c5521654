use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = bankgraph::cli::Cli::parse();
    bankgraph::telemetry::init(cli.log_format == "json");
    bankgraph::cli::run(cli).await
}
