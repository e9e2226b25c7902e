//! `switchboard`: one binary, one service per process.
//!
//! `switchboard ingress` (or normalizer, matcher, recordings, calllog) runs that service until
//! SIGINT/SIGTERM, then drains, commits and exits 0. Configuration errors exit 64 before any port
//! is bound. `switchboard init` creates topics and applies migrations; `switchboard sources`
//! manages PBX sources and their credentials; `switchboard profiles` the dispatcher's delivery
//! profiles; `switchboard blacklist` the number blacklist (`blacklist.rs`); `switchboard call`,
//! `hangup` and `disposition` talk to the desk's API (`calls.rs`).

// Service code must not panic on what it is given (#18): no `unwrap`, no indexing or slicing
// that can go out of bounds, no arithmetic that can overflow. Tests may.
#![warn(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

mod admin;
mod blacklist;
mod calls;
mod secret_input;

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use switchboard_adapters::SourceSettings;
use switchboard_core::config::{Service, Settings};
use switchboard_core::model::{Secret, SourceId};
use switchboard_core::runtime::{self, EXIT_CONFIG, EXIT_FAILURE, EXIT_UNAVAILABLE};
use switchboard_core::service::{self, ServiceError};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about = "Telephony-to-CRM integration hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The commands besides the services. Each service of `Service::ALL` is a subcommand too, added
/// from that list by [`parse_command_line`], so that a new service needs no line here.
#[derive(Debug, Subcommand)]
enum Command {
    /// Create the topics and apply database migrations, then exit.
    Init,
    /// Manage the PBX sources allowed to post webhooks.
    Sources {
        #[command(subcommand)]
        action: SourcesAction,
    },
    /// Manage the dispatcher's delivery profiles (the same as its API's /v1/profiles).
    Profiles {
        #[command(subcommand)]
        action: ProfilesAction,
    },
    /// Manage the number blacklist (the same as the router's API's /v1/blacklist).
    Blacklist {
        #[command(subcommand)]
        action: blacklist::Action,
    },
    /// Place a call through the desk's API: the PBX rings the agent, then the number.
    Call(calls::CallArgs),
    /// Hang up a call placed with `switchboard call`, through the desk's API.
    Hangup(calls::HangupArgs),
    /// Set a call's disposition, or list the codes, through the desk's API.
    Disposition {
        #[command(subcommand)]
        action: calls::DispositionAction,
    },
}

#[derive(Debug, Subcommand)]
enum ProfilesAction {
    /// Create or replace a profile from a JSON file (`-` for standard input), validated first.
    Put {
        /// 1 to 64 of A-Z, a-z, 0-9, '-' and '_'.
        id: String,
        file: std::path::PathBuf,
    },
    /// Create or replace a profile from a built-in CRM connector (hubspot, pipedrive, bitrix24,
    /// amocrm) and its settings (docs/dispatcher.md): the CRM's address, token and user mapping.
    Connector {
        /// 1 to 64 of A-Z, a-z, 0-9, '-' and '_'.
        id: String,
        /// hubspot, pipedrive, bitrix24 or amocrm.
        connector: String,
        /// The connector's settings as JSON; they hold the CRM's token, so `-` reads them from
        /// standard input and `@<file>` from a file.
        #[arg(long)]
        settings: String,
    },
    /// List profiles: id, state, name.
    List,
    /// Delete a profile with its deliveries.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
enum SourcesAction {
    /// Create a source and print its credentials (shown only this once).
    Add {
        /// URL-safe id, also the HTTP Basic user name.
        id: String,
        /// The adapter that reads this source's webhooks.
        #[arg(long, default_value = "generic")]
        vendor: String,
        /// ISO 3166 region for numbers the PBX sends in national format.
        #[arg(long, default_value = "US")]
        region: String,
        /// The vendor's own signing key, for vendors that sign webhooks: Twilio auth token,
        /// Zadarma API secret, Mango API salt, Aircall webhook token. `-` reads it from standard
        /// input and `@<file>` from a file, which keeps it off the command line.
        #[arg(long)]
        signing_secret: Option<String>,
        /// Adapter settings as JSON: `public_url` (the URL the vendor calls; Twilio signs it),
        /// `api_key` (Mango), `timezone` (IANA zone of a PBX that sends local times),
        /// `match_agent_by_email`, and for recordings `recording_api_url`, `api_token_url`
        /// (docs/vendors.md). `-` or `@<file>` as for the secrets (settings may hold some).
        #[arg(long, default_value = "{}")]
        settings: String,
        /// The client of the vendor's API the recordings stage asks for recording links: Telphin
        /// OAuth client id, Zadarma API key, Aircall API id, Twilio Account SID.
        #[arg(long)]
        api_client_id: Option<String>,
        /// Its secret: Telphin OAuth client secret, Zadarma API secret (default: the signing
        /// secret), Aircall API token. `-` or `@<file>` as for the signing secret.
        #[arg(long)]
        api_client_secret: Option<String>,
        /// Print the credentials as one JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List sources.
    List,
    /// Seal every source's secrets with sources.secrets_key: those stored before secrets were
    /// sealed, and, during a key rotation, those sealed with sources.previous_secrets_key.
    Reseal,
}

fn check_profile_id(id: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        switchboard_dispatcher::profile::valid_id(id),
        "a profile id is 1 to 64 of A-Z, a-z, 0-9, '-' and '_'"
    );
    Ok(())
}

/// Parses the command line: `switchboard <service>` for every service of `Service::ALL`, else one
/// of [`Command`]. Exits with clap's usage error (code 2) on a command line it cannot read.
fn parse_command_line() -> Result<Parsed, anyhow::Error> {
    let command = Service::ALL.into_iter().fold(Cli::command(), |cli, service| {
        cli.subcommand(clap::Command::new(service.name()).about(service.about()))
    });
    let matches = command.get_matches();
    if let Some(service) = matches.subcommand_name().and_then(Service::named) {
        return Ok(Parsed::Run(service));
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    Parsed::from(cli.command)
}

fn main() -> ExitCode {
    let parsed = parse_command_line();
    let settings = match switchboard::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("switchboard: {error}");
            return exit(EXIT_CONFIG);
        }
    };
    // Arguments are checked before any runtime or connection exists, like the configuration.
    let command = match parsed {
        Ok(command) => command,
        Err(error) => {
            eprintln!("switchboard: {error:#}");
            return exit(EXIT_CONFIG);
        }
    };
    runtime::init_tracing(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchboard: cannot start the async runtime: {error}");
            return exit(EXIT_FAILURE);
        }
    };
    runtime.block_on(run(command, settings))
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// A command with its arguments validated.
#[derive(Debug)]
enum Parsed {
    Run(Service),
    Admin(admin::Admin),
    Blacklist(blacklist::Action),
    Desk(calls::DeskCommand),
}

impl Parsed {
    fn from(command: Command) -> anyhow::Result<Self> {
        Ok(match command {
            Command::Init => Parsed::Admin(admin::Admin::Init),
            Command::Blacklist { action } => Parsed::Blacklist(action),
            Command::Call(args) => Parsed::Desk(calls::DeskCommand::Call(args)),
            Command::Hangup(args) => Parsed::Desk(calls::DeskCommand::Hangup(args)),
            Command::Disposition { action } => Parsed::Desk(calls::DeskCommand::Disposition(action)),
            Command::Sources { action: SourcesAction::List } => Parsed::Admin(admin::Admin::ListSources),
            Command::Sources { action: SourcesAction::Reseal } => Parsed::Admin(admin::Admin::ResealSources),
            Command::Profiles { action: ProfilesAction::List } => Parsed::Admin(admin::Admin::ListProfiles),
            Command::Profiles { action: ProfilesAction::Delete { id } } => {
                Parsed::Admin(admin::Admin::DeleteProfile { id })
            }
            Command::Profiles { action: ProfilesAction::Connector { id, connector, settings } } => {
                check_profile_id(&id)?;
                let text = secret_input::SecretInput::default().read("--settings", settings)?;
                let settings: serde_json::Value =
                    serde_json::from_str(&text).context("--settings is not JSON")?;
                let profile = switchboard_dispatcher::connectors::by_name(&connector, settings)
                    .with_context(|| format!("the {connector} connector"))?;
                Parsed::Admin(admin::Admin::PutProfile { id, profile: Box::new(profile) })
            }
            Command::Profiles { action: ProfilesAction::Put { id, file } } => {
                check_profile_id(&id)?;
                let json = if file.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin()).context("reading the profile")?
                } else {
                    std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
                };
                let profile =
                    switchboard_dispatcher::profile::Profile::from_json(&json).context("the profile")?;
                Parsed::Admin(admin::Admin::PutProfile { id, profile: Box::new(profile) })
            }
            Command::Sources {
                action:
                    SourcesAction::Add {
                        id,
                        vendor,
                        region,
                        signing_secret,
                        settings,
                        api_client_id,
                        api_client_secret,
                        json,
                    },
            } => {
                let mut input = secret_input::SecretInput::default();
                let settings = input.read("--settings", settings)?;
                let signing_secret = signing_secret.map(|s| input.read("--signing-secret", s)).transpose()?;
                let api_client_secret =
                    api_client_secret.map(|s| input.read("--api-client-secret", s)).transpose()?;
                let mut settings: SourceSettings = serde_json::from_str(&settings).context("--settings")?;
                // The flags win over the same keys in --settings.
                if let Some(id) = api_client_id {
                    settings.api_client_id = Some(id);
                }
                if let Some(secret) = api_client_secret {
                    settings.api_client_secret = Some(Secret::new(secret));
                }
                settings.validate().map_err(anyhow::Error::msg).context("--settings")?;
                Parsed::Admin(admin::Admin::AddSource {
                    id: SourceId::parse(id).context("source id")?,
                    vendor: vendor.parse().context("--vendor")?,
                    region: region.parse().context("--region")?,
                    signing_secret: signing_secret.filter(|s| !s.is_empty()),
                    settings: Box::new(settings),
                    json,
                })
            }
        })
    }
}

async fn run(command: Parsed, settings: Settings) -> ExitCode {
    let cancel = CancellationToken::new();
    runtime::cancel_on_signal(cancel.clone());
    match command {
        Parsed::Run(service) => run_service(service, settings, cancel).await,
        Parsed::Blacklist(action) => blacklist::run(action, &settings, &cancel).await,
        Parsed::Desk(command) => calls::run(command, &cancel).await,
        Parsed::Admin(command) => match admin::run(command, &settings, &cancel).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("switchboard: {error:#}");
                exit(EXIT_FAILURE)
            }
        },
    }
}

async fn run_service(service: Service, settings: Settings, cancel: CancellationToken) -> ExitCode {
    // `Service::ALL` and `switchboard::SERVICES` are checked to list the same services.
    let Some(entry) = switchboard::entry(service) else {
        eprintln!("switchboard: {} has no entry in switchboard::SERVICES", service.name());
        return exit(EXIT_FAILURE);
    };
    if let Err(error) = switchboard::check_start(&settings, service) {
        eprintln!("switchboard: {error}");
        return exit(EXIT_CONFIG);
    }
    let listener = match service::bind(&settings, service).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "Cannot start.");
            return exit(EXIT_UNAVAILABLE);
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(service = service.name(), %addr, "Listening.");
    }
    let outcome: Result<(), ServiceError> = (entry.run)(settings, listener, cancel).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, service = service.name(), "Stopped on an error.");
            exit(EXIT_FAILURE)
        }
    }
}
