use std::path::PathBuf;
use std::process::ExitCode;

use bridge_shared::integrations::Integrations;
use bridge_shared::settings::Settings;
use clap::{Parser, Subcommand};
use ingest::startup::Application;

#[derive(Parser)]
#[command(about = "Receives Verbox webhooks and stores them durably for delivery to CoMagic")]
struct Cli {
    #[arg(long, env = "BRIDGE_CONFIG", default_value = "bridge.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Prints the webhook URLs, the steps in the Verbox cabinet, and the site script.
    Setup { integration: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    bridge_shared::telemetry::init_logging();
    let cli = Cli::parse();
    let settings = match Settings::load(&cli.config) {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    match cli.command {
        Some(Command::Setup { integration }) => {
            let set = match Integrations::load(&settings.integrations) {
                Ok(set) => set,
                Err(e) => return refuse(e),
            };
            match set.get(&integration) {
                Some(i) => {
                    print!("{}", ingest::setup::instructions(&settings.ingest.public_url, i));
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("no integration `{integration}` in {}", settings.integrations.display());
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let app = match Application::build(settings).await {
                Ok(app) => app,
                Err(e) => return refuse(e),
            };
            match app.run_until_stopped().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ingest: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// One line naming what is wrong, then a non-zero exit.
fn refuse(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("ingest: invalid configuration: {error}");
    ExitCode::from(2)
}
