use std::path::PathBuf;
use std::process::ExitCode;

use bridge_shared::settings::Settings;
use clap::Parser;
use deliver::startup::Application;

#[derive(Parser)]
#[command(about = "Delivers accepted Verbox events to CoMagic as chats and offline requests")]
struct Cli {
    #[arg(long, env = "BRIDGE_CONFIG", default_value = "bridge.toml")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    bridge_shared::telemetry::init_logging();
    let cli = Cli::parse();
    let settings = match Settings::load(&cli.config) {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => return refuse(e),
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deliver: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line naming what is wrong, then a non-zero exit.
fn refuse(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("deliver: invalid configuration: {error}");
    ExitCode::from(2)
}
