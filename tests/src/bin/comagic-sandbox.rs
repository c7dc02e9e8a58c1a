//! `comagic-sandbox --config sandbox.toml --listen 127.0.0.1:8099`: the sandbox as a process, for
//! demos and the local run.

use std::path::PathBuf;

use bridge_tests::sandbox::{Sandbox, SandboxConfig};
use clap::Parser;

#[derive(Parser)]
#[command(about = "A local CoMagic Data API that enforces the documented contract")]
struct Args {
    #[arg(long)]
    config: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8099")]
    listen: String,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)?;
    let config: SandboxConfig =
        toml::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let sandbox = Sandbox::start_on(config, &args.listen).await?;
    println!("comagic-sandbox listening: {}", sandbox.url());
    tokio::signal::ctrl_c().await?;
    sandbox.stop().await;
    Ok(())
}
