//! The command line: the worker by default, and the operator commands `dlq` and `check`.
//! Exit codes: 0 done (or nothing wrong), 1 something is wrong or failed, 2 refused (bad config or
//! a missing `--yes`).

use std::path::PathBuf;
use std::process::ExitCode;

use bridge_shared::amqp::headers::DeadClass;
use bridge_shared::event::EventKind;
use bridge_shared::integrations::store::{Action, Edit, Location, Store, StoreError};
use bridge_shared::lifecycle::invalid_configuration;
use bridge_shared::service::run_to_exit;
use bridge_shared::settings::Settings;
use clap::{Args, Parser, Subcommand};

use crate::console::Search;
use crate::console::{AdminTokens, Console, ADMIN_TOKENS_VAR};
use crate::dlq::{self, Filter, Format, ReplayOptions, Selection};
use crate::journey::reader::Reader;
use crate::journey::{journey_table, page_table};
use crate::startup::Application;

#[derive(Parser)]
#[command(about = "Delivers accepted Verbox events to CoMagic as chats and offline requests")]
pub struct Cli {
    #[arg(long, env = "BRIDGE_CONFIG", default_value = "bridge.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the worker (what `deliver` without a command does).
    Run,
    /// Inspects, replays, exports or purges the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Serves the admin API and the settings console on `[console] listen` (admin tokens from
    /// BRIDGE_ADMIN_TOKENS).
    Console,
    /// Copies every integration of an integrations.toml into the configured store (moving to the
    /// PostgreSQL store); an id the store already has is left as it is, and named.
    ImportIntegrations {
        #[arg(long)]
        from: PathBuf,
    },
    /// Finds events' journeys: what became of each, step by step.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Checks integrations against their CoMagic accounts; exit code 1 when anything is wrong.
    Check {
        /// One integration; all of them when left out.
        integration: Option<String>,
        /// Check every integration.
        #[arg(long, conflicts_with_all = ["integration", "list"])]
        all: bool,
        /// Print the account's employees, campaigns, sites and sources instead.
        #[arg(long, value_name = "INTEGRATION", conflicts_with = "integration")]
        list: Option<String>,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// One integration's events, newest first (a page; `more:` says how to get the next).
    Find {
        #[arg(long)]
        integration: String,
        #[arg(long)]
        event_id: Option<String>,
        /// The Verbox dialog id.
        #[arg(long)]
        dialog: Option<String>,
        /// The visitor's phone or e-mail, as typed.
        #[arg(long)]
        contact: Option<String>,
        /// Accepted at or after (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Accepted at or before (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// delivered, dead_lettered or on_its_way.
        #[arg(long)]
        outcome: Option<String>,
        /// Where the previous page stopped.
        #[arg(long)]
        before: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        /// The page as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One event's journey, step by step.
    Show {
        event_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Counts by integration, kind and error class.
    Stats {
        #[command(flatten)]
        filters: Filters,
        #[arg(long)]
        json: bool,
    },
    /// The dead letters, one per line.
    List {
        #[command(flatten)]
        filters: Filters,
        #[arg(long)]
        limit: Option<usize>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publishes matching dead letters back to the events exchange, confirmed, then removes them.
    Replay {
        #[command(flatten)]
        filters: Filters,
        #[arg(long)]
        limit: Option<usize>,
        /// Messages per second at most.
        #[arg(long, value_name = "PER_SEC", value_parser = positive_rate)]
        rate: Option<f64>,
        /// Show what would be replayed; move nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Writes matching dead letters to a JSON-lines file; the queue is unchanged.
    Export {
        #[command(flatten)]
        filters: Filters,
        #[arg(long)]
        limit: Option<usize>,
        /// A new file (created readable by you only).
        #[arg(long, value_name = "FILE.jsonl")]
        out: PathBuf,
        /// Replace FILE if it exists (a symbolic link is replaced, not followed).
        #[arg(long)]
        force: bool,
    },
    /// Deletes matching dead letters for good (needs --yes).
    Purge {
        #[command(flatten)]
        filters: Filters,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
struct Filters {
    #[arg(long)]
    integration: Option<String>,
    #[arg(long, value_parser = parse_kind)]
    kind: Option<EventKind>,
    /// invalid_event, comagic_rejected, retries_exhausted or poison.
    #[arg(long, value_parser = parse_class)]
    class: Option<DeadClass>,
    /// Dead since: a time (2026-11-24T09:00:00Z) or an age (90m, 6h, 2d).
    #[arg(long, value_parser = |s: &str| dlq::parse_since(s, chrono::Utc::now()))]
    since: Option<chrono::DateTime<chrono::Utc>>,
}

impl Filters {
    fn select(self, limit: Option<usize>) -> Selection {
        let (integration, kind, class, since) = (self.integration, self.kind, self.class, self.since);
        let filter = Filter { integration, kind, class, since, event_id: None };
        Selection { filter, limit }
    }
}

fn parse_kind(s: &str) -> Result<EventKind, String> {
    EventKind::parse(s).ok_or_else(|| "chat or offline".into())
}

fn parse_class(s: &str) -> Result<DeadClass, String> {
    DeadClass::parse(s).ok_or_else(|| {
        let all: Vec<&str> = DeadClass::ALL.iter().map(|c| c.as_str()).collect();
        format!("one of {}", all.join(", "))
    })
}

/// A replay rate: 0.01 (one every 100 s) to 100,000 messages per second; a rate outside that is
/// a typo, and its pacing arithmetic would overflow.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.01..=100_000.0).contains(&r) => Ok(r),
        _ => Err("a number of messages per second from 0.01 to 100000".into()),
    }
}

fn format(json: bool) -> Format {
    if json {
        Format::Json
    } else {
        Format::Table
    }
}

pub async fn run(cli: Cli) -> ExitCode {
    let worker = matches!(cli.command, None | Some(Command::Run | Command::Console));
    if worker {
        bridge_shared::telemetry::init_logging();
    } else {
        bridge_shared::telemetry::init_cli_logging();
    }
    let settings = match Settings::load(&cli.config) {
        Ok(s) => s,
        Err(e) => return invalid_configuration("deliver", e),
    };
    match cli.command {
        None | Some(Command::Run) => run_to_exit("deliver", Application::build(settings).await).await,
        Some(Command::Console) => run_console(settings).await,
        Some(Command::ImportIntegrations { from }) => run_import(&settings, from).await,
        Some(Command::Dlq(command)) => run_dlq(&settings, command).await,
        Some(Command::Events(command)) => run_events(&settings, command).await,
        Some(Command::Check { integration, all: _, list }) => run_check(&settings, integration, list).await,
    }
}

async fn run_console(settings: Settings) -> ExitCode {
    let tokens = match AdminTokens::parse(std::env::var(ADMIN_TOKENS_VAR).ok().as_deref()) {
        Ok(tokens) => tokens,
        Err(e) => return invalid_configuration("deliver console", e),
    };
    run_to_exit("deliver console", Console::build(settings, tokens).await).await
}

async fn run_import(settings: &Settings, from: PathBuf) -> ExitCode {
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let source = match Store::open(&Location::File(from)).await {
        Ok(store) => store.list().await,
        Err(e) => Err(e),
    };
    let source = match source {
        Ok(source) => source,
        Err(e) => return invalid_configuration("deliver import-integrations", e),
    };
    let location = Location::of(settings);
    let target = match Store::open(&location).await {
        Ok(target) => target,
        Err(e) => return failed(e),
    };
    let (mut imported, mut kept) = (0, Vec::new());
    let edit = Edit::new("deliver import-integrations", Action::Created);
    for stored in source {
        match target.create(stored.form, &env, &edit).await {
            Ok(_) => imported += 1,
            Err(StoreError::Exists(id)) => kept.push(id),
            Err(e) => return failed(e),
        }
    }
    print!("imported {imported} integrations into {location}");
    if kept.is_empty() {
        println!();
    } else {
        println!("; {} already there, left as they are: {}", kept.len(), kept.join(", "));
    }
    ExitCode::SUCCESS
}

async fn run_dlq(settings: &Settings, command: DlqCommand) -> ExitCode {
    let amqp = &settings.amqp;
    let result = match command {
        DlqCommand::Stats { filters, json } => dlq::stats(amqp, &filters.select(None), format(json)).await,
        DlqCommand::List { filters, limit, json } => dlq::list(amqp, &filters.select(limit), format(json)).await,
        DlqCommand::Replay { filters, limit, rate, dry_run } => {
            let options = ReplayOptions { rate, dry_run, publish_timeout: amqp.publish_timeout };
            dlq::replay(amqp, &filters.select(limit), &options).await
        }
        DlqCommand::Export { filters, limit, out, force } => {
            dlq::export(amqp, &filters.select(limit), &out, force).await
        }
        DlqCommand::Purge { dry_run: false, yes: false, .. } => {
            eprintln!(
                "deliver: purge deletes dead letters for good: add --yes (see them first with `deliver dlq list` \
                 and the same filters, or keep a copy with `deliver dlq export`)"
            );
            return ExitCode::from(2);
        }
        DlqCommand::Purge { filters, limit, dry_run, .. } => dlq::purge(amqp, &filters.select(limit), dry_run).await,
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => failed(e),
    }
}

async fn run_events(settings: &Settings, command: EventsCommand) -> ExitCode {
    let reader = match Reader::open(settings, &bridge_shared::postgres::Postgres::new(settings.postgres_timeout)).await
    {
        Ok(reader) => reader,
        Err(e) => return failed(e),
    };
    let out = match command {
        EventsCommand::Find { integration, event_id, dialog, contact, from, to, outcome, before, limit, json } => {
            let search = Search { event_id, dialog, contact, from, to, outcome, before, limit };
            let query = match search.query(&integration) {
                Ok(query) => query,
                Err(e) => return invalid_configuration("deliver events find", e),
            };
            reader.find(query).await.map(|page| match json {
                true => serde_json::to_string_pretty(&page).unwrap_or_default() + "\n",
                false => page_table(&page),
            })
        }
        EventsCommand::Show { event_id, json } => match reader.get(&event_id).await {
            Ok(None) => {
                return failed(format!("no event `{}` in the journey", bridge_shared::redact::cut(&event_id, 100)))
            }
            Ok(Some(j)) if json => Ok(serde_json::to_string_pretty(&j).unwrap_or_default() + "\n"),
            Ok(Some(j)) => Ok(journey_table(&j)),
            Err(e) => Err(e),
        },
    };
    match out {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => failed(e),
    }
}

async fn run_check(settings: &Settings, integration: Option<String>, list: Option<String>) -> ExitCode {
    let location = Location::of(settings);
    let set = match location.read().await {
        Ok(set) => set,
        Err(e) => return invalid_configuration("deliver", e),
    };
    let client = crate::check::client();
    let chosen: Vec<_> = match list.as_ref().or(integration.as_ref()) {
        Some(id) => match set.get(id) {
            Some(i) => vec![i.clone()],
            None => return failed(format!("no integration `{id}` in {location}")),
        },
        None => set.iter().cloned().collect(),
    };
    if list.is_some() {
        return match crate::check::listing(&client, &chosen[0]).await {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(problem) => failed(problem),
        };
    }
    let mut wrong = 0;
    for integration in &chosen {
        let problems = crate::check::check(&client, integration).await;
        if problems.is_empty() {
            println!("{}: ok", integration.id);
        }
        for problem in &problems {
            println!("{problem}");
        }
        wrong += usize::from(!problems.is_empty());
    }
    if wrong == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("deliver: {wrong} of {} integrations need changes", chosen.len());
        ExitCode::FAILURE
    }
}

fn failed(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("deliver: {error}");
    ExitCode::FAILURE
}
