//! The commands that do one thing against Kafka or PostgreSQL, print what they did and exit:
//! `switchboard init`, `sources add|list|reseal` and `profiles put|connector|list|delete`. Their
//! arguments are parsed and checked in `main.rs`, before anything connects.

use anyhow::Context;
use switchboard_adapters::SourceSettings;
use switchboard_core::config::{Service, Settings};
use switchboard_core::model::{Region, SourceId, Vendor};
use switchboard_core::{kafka, pg};
use switchboard_dispatcher::DispatcherSettings;
use tokio_util::sync::CancellationToken;

/// Commands that do one thing against Kafka or PostgreSQL and exit.
#[derive(Debug)]
pub(crate) enum Admin {
    Init,
    AddSource {
        id: SourceId,
        vendor: Vendor,
        region: Region,
        signing_secret: Option<String>,
        /// Boxed: the settings are far larger than any other command's arguments.
        settings: Box<SourceSettings>,
        json: bool,
    },
    ListSources,
    ResealSources,
    PutProfile {
        id: String,
        profile: Box<switchboard_dispatcher::profile::Profile>,
    },
    ListProfiles,
    DeleteProfile {
        id: String,
    },
}

/// The sealer of the sources' secrets, or why there is none.
fn sources_sealer(settings: &Settings) -> anyhow::Result<switchboard_core::seal::Sealer> {
    anyhow::ensure!(
        !settings.sources.secrets_key.is_empty(),
        "sources.secrets_key (SWITCHBOARD_SOURCES__SECRETS_KEY) must be set: the sources' secrets are sealed with it"
    );
    Ok(switchboard_core::source_secrets::sealer(settings)?)
}

/// Runs `command` and prints what it did.
pub(crate) async fn run(
    command: Admin,
    settings: &Settings,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let pool = pg::connect_and_migrate(&settings.postgres, switchboard_schema::MIGRATIONS, cancel)
        .await?
        .context("cancelled while waiting for PostgreSQL")?;
    match command {
        Admin::Init => {
            let topics = settings.kafka.topics();
            anyhow::ensure!(
                kafka::ensure_topics(&settings.kafka, &topics.all(), cancel).await,
                "cancelled while waiting for Kafka"
            );
            println!("Topics ready: {}", topics.all().join(", "));
            println!("Database migrated.");
        }
        Admin::AddSource { id, vendor, region, signing_secret, settings: source_settings, json } => {
            let sealer = sources_sealer(settings)?;
            let created = switchboard_ingress::sources::create(
                &pool,
                &sealer,
                &id,
                vendor,
                region,
                signing_secret.as_deref(),
                &source_settings,
            )
            .await?;
            if json {
                let credentials = serde_json::json!({
                    "id": created.id.as_str(),
                    "vendor": vendor.as_str(),
                    "secret": created.secret,
                });
                println!("{credentials}");
            } else {
                println!("Source {} ({}) created.", created.id, created.vendor);
                println!("Webhook URL:  POST /v1/webhooks/{}", created.id);
                println!("User name:    {}", created.id);
                println!("Password:     {}", created.secret);
                println!(
                    "  (or, for a PBX that can only be given a URL: /v1/webhooks/{}?token=<password>)",
                    created.id
                );
                println!("The password is shown only now; Switchboard stores only its hash.");
            }
        }
        Admin::ResealSources => {
            let sealed = switchboard_ingress::sources::reseal(&pool, &sources_sealer(settings)?).await?;
            println!("{sealed} sources sealed with sources.secrets_key; no plaintext secret is left.");
        }
        Admin::ListSources => {
            for source in switchboard_ingress::sources::list(&pool).await? {
                let state = if source.enabled { "enabled" } else { "disabled" };
                println!("{}\t{}\t{}\t{state}", source.id, source.vendor, source.region);
            }
        }
        Admin::PutProfile { id, profile } => {
            let own: DispatcherSettings = settings.own_section(Service::Dispatcher)?;
            let sealer = switchboard_dispatcher::seal::Sealer::new(own.secrets_key.expose())?;
            let created = switchboard_dispatcher::store::put_profile(&pool, &sealer, &id, &profile).await?;
            println!("Profile {id} {}.", if created { "created" } else { "replaced" });
        }
        Admin::ListProfiles => {
            for profile in switchboard_dispatcher::store::list_profiles(&pool).await? {
                let field = |name: &str| {
                    profile.get(name).and_then(serde_json::Value::as_str).unwrap_or_default().to_owned()
                };
                println!("{}\t{}\t{}", field("id"), field("state"), field("name"));
            }
        }
        Admin::DeleteProfile { id } => {
            anyhow::ensure!(
                switchboard_dispatcher::store::delete_profile(&pool, &id).await?,
                "no profile {id}"
            );
            println!("Profile {id} deleted, with its deliveries.");
        }
    }
    Ok(())
}
