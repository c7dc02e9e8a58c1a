//! The command line: the webhook receiver by default, and the operator commands `setup` and
//! `drain-spool`. Exit codes: 0 done, 1 something is wrong or failed, 2 refused (bad config).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::startup::Application;
use bridge_shared::integrations::store::Location;
use bridge_shared::lifecycle::invalid_configuration;
use bridge_shared::service::run_to_exit;
use bridge_shared::settings::Settings;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Receives Verbox webhooks and stores them durably for delivery to CoMagic")]
pub struct Cli {
    #[arg(long, env = "BRIDGE_CONFIG", default_value = "bridge.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Prints the webhook URLs, the steps in the Verbox cabinet, and the site script.
    Setup { integration: String },
    /// Publishes every event of a spool directory to the broker (one a stopped replica left
    /// behind), then exits: 0 when the spool is empty, 1 when events remain.
    DrainSpool {
        /// The spool directory (default: `[ingest] spool_dir`). Not one a running ingest uses.
        #[arg(long)]
        spool_dir: Option<PathBuf>,
        /// Give up after this long, e.g. `5m`.
        #[arg(long, default_value = "5m", value_parser = bridge_shared::settings::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// Runs what `cli` asks for to its end.
pub async fn run(cli: Cli) -> ExitCode {
    // Commands print their results on stdout; their warnings go to stderr.
    if cli.command.is_some() {
        bridge_shared::telemetry::init_cli_logging();
    } else {
        bridge_shared::telemetry::init_logging();
    }
    let settings = match Settings::load(&cli.config) {
        Ok(s) => s,
        Err(e) => return invalid_configuration("ingest", e),
    };
    match cli.command {
        Some(Command::Setup { integration }) => {
            let location = Location::of(&settings);
            let set = match location.read().await {
                Ok(set) => set,
                Err(e) => return invalid_configuration("ingest", e),
            };
            match set.get(&integration) {
                Some(i) => {
                    print!("{}", bridge_shared::setup::instructions(&settings.ingest.public_url, i));
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("no integration `{integration}` in {location}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::DrainSpool { spool_dir, timeout }) => {
            let dir = spool_dir.unwrap_or_else(|| settings.ingest.spool_dir.clone());
            match crate::drain::drain_spool(&settings, &dir, timeout).await {
                Ok(drained) => {
                    println!("published {} events; {} left in {}", drained.published, drained.left, dir.display());
                    if drained.left == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("ingest drain-spool: {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
        None => run_to_exit("ingest", Application::build(settings).await).await,
    }
}
