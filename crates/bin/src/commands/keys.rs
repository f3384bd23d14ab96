//! `emporium keys create|list|revoke` over the API store (the data directory's `api.redb`, or
//! PostgreSQL with `--database-url`), and `emporium migrate`.

use std::sync::Arc;

use anyhow::Context;
use emporium_api::http::auth::create_key;
use emporium_api::rfc3339::Micros;
use emporium_api::store::{ApiKeyRecord, ApiStore, PgApiStore, RedbApiStore, Scope, now_micros};
use serde::Serialize;

use super::api_store_path;
use crate::cli::{KeysCommand, StoreArgs};

async fn open_api_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn ApiStore>> {
    if let Some(url) = &args.database_url {
        let store = PgApiStore::connect(url)
            .await
            .context("connecting to the PostgreSQL API store")?;
        return Ok(Arc::new(store));
    }
    let path = api_store_path(&args.data_dir);
    let shown = path.display().to_string();
    let store = tokio::task::spawn_blocking(move || RedbApiStore::open(path))
        .await
        .context("opening the API store")?
        .with_context(|| {
            format!("opening the API store {shown} (is a server running on this data directory?)")
        })?;
    Ok(Arc::new(store))
}

#[derive(Serialize)]
struct KeyJson<'a> {
    id: &'a str,
    name: &'a str,
    scopes: &'a [Scope],
    created_at: Micros,
    revoked_at: Option<Micros>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
}

impl<'a> KeyJson<'a> {
    fn new(record: &'a ApiKeyRecord, secret: Option<&'a str>) -> Self {
        KeyJson {
            id: &record.id,
            name: &record.name,
            scopes: &record.scopes,
            created_at: Micros(record.created_at_micros),
            revoked_at: record.revoked_at_micros.map(Micros),
            secret,
        }
    }
}

fn scopes_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn run(store_args: &StoreArgs, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { name, scopes, json } => {
            let scopes = scopes
                .iter()
                .map(|s| s.trim().parse::<Scope>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let store = open_api_store(store_args).await?;
            let key = create_key(&*store, &name, &scopes)
                .await
                .context("creating the key")?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&KeyJson::new(&key.record, Some(&key.secret)))?
                );
            } else {
                println!(
                    "Created key {} ({}) with scopes {}.\n\nIts secret is shown only this once:\n\n    {}\n",
                    key.record.id,
                    key.record.name,
                    scopes_text(&key.record.scopes),
                    key.secret
                );
            }
        }
        KeysCommand::List { json } => {
            let store = open_api_store(store_args).await?;
            let keys = store.list_keys().await.context("listing keys")?;
            if json {
                let keys: Vec<KeyJson<'_>> = keys.iter().map(|k| KeyJson::new(k, None)).collect();
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else if keys.is_empty() {
                println!("No API keys (a server creates an admin key at its first start).");
            } else {
                println!(
                    "{:<18} {:<32} {:<28} {:<28} REVOKED",
                    "ID", "NAME", "SCOPES", "CREATED"
                );
                for key in &keys {
                    println!(
                        "{:<18} {:<32} {:<28} {:<28} {}",
                        key.id,
                        key.name,
                        scopes_text(&key.scopes),
                        Micros(key.created_at_micros).to_string(),
                        key.revoked_at_micros
                            .map_or_else(|| "-".to_owned(), |t| Micros(t).to_string())
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            let store = open_api_store(store_args).await?;
            let found = store
                .revoke_key(&id, now_micros())
                .await
                .context("revoking the key")?;
            if !found {
                anyhow::bail!("no API key with id {id:?} (see `emporium keys list`)");
            }
            println!(
                "Revoked key {id}. A running server stops accepting it within its key cache \
                 lifetime."
            );
        }
    }
    Ok(())
}

/// `emporium migrate`: the event store's and the API store's schema on `--database-url`.
pub async fn migrate(store_args: &StoreArgs) -> anyhow::Result<()> {
    let Some(url) = &store_args.database_url else {
        anyhow::bail!(
            "migrate needs a PostgreSQL URL: pass --database-url or set EMPORIUM_DATABASE_URL (the \
             embedded store needs no migration)"
        );
    };
    // Connecting migrates each schema (idempotent, safe beside running nodes).
    let events = emporium_eventstore::PostgresStore::connect(url)
        .await
        .context("migrating the event store")?;
    events.close().await;
    PgApiStore::connect(url)
        .await
        .context("migrating the API store")?;
    println!("The event store and API schemas are up to date.");
    Ok(())
}
