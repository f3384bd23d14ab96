//! `emporium projections status|rebuild` on a stopped data directory (the projection set of
//! `emporium_projections::set`, opened on the event store).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use emporium_projections::{
    ProjectionName, ProjectionSet, ProjectionSetConfig, Rebuild, RebuildPhase, RebuildProgress,
};
use serde::Deserialize;

use super::{OpenStore, open_event_store_log_order, progress};
use crate::cli::{ProjectionsCommand, RebuildArgs, StoreArgs};

async fn open_set(store_args: &StoreArgs) -> anyhow::Result<(OpenStore, Arc<ProjectionSet>)> {
    let store = open_event_store_log_order(store_args).await?;
    let shared = store.shared();
    let mut config = ProjectionSetConfig::new(&store_args.data_dir);
    // Offline: only what the command rebuilds runs (see `ProjectionSetConfig::follow`).
    config.follow = false;
    let set =
        tokio::task::block_in_place(|| ProjectionSet::open(shared, config)).with_context(|| {
            format!(
                "opening the projections in {} (is a server running on this data directory?)",
                store_args.data_dir.join("projections").display()
            )
        })?;
    Ok((store, set))
}

async fn close(store: OpenStore, set: Arc<ProjectionSet>) {
    tokio::task::block_in_place(|| set.close());
    store.close().await;
}

pub async fn run(store_args: &StoreArgs, command: ProjectionsCommand) -> anyhow::Result<()> {
    match command {
        ProjectionsCommand::Status { json } => {
            let (store, set) = open_set(store_args).await?;
            let status = set.status().await;
            close(store, set).await;
            let status = status.context("reading the projections' status")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!(
                "{:<10} {:>10} {:>12} {:>12} {:>12} {:>14}",
                "NAME", "GENERATION", "POSITION", "LAG", "EVENTS/S", "STORAGE"
            );
            for s in &status {
                println!(
                    "{:<10} {:>10} {:>12} {:>12} {:>12.0} {:>14}",
                    s.name.as_str(),
                    s.generation,
                    s.position,
                    s.lag,
                    s.events_per_second,
                    human_bytes(s.storage_bytes)
                );
                if let Some(error) = &s.last_error {
                    println!("  last error: {error}");
                }
            }
            Ok(())
        }
        ProjectionsCommand::Rebuild(args) => rebuild(store_args, args).await,
    }
}

async fn rebuild(store_args: &StoreArgs, args: RebuildArgs) -> anyhow::Result<()> {
    let names: Vec<ProjectionName> = if args.all {
        ProjectionName::ALL.to_vec()
    } else {
        let mut names = Vec::with_capacity(args.names.len());
        for name in &args.names {
            let parsed = ProjectionName::parse(name).with_context(|| {
                format!("no projection named {name:?} (catalog, stock, orders or search)")
            })?;
            if !names.contains(&parsed) {
                names.push(parsed);
            }
        }
        names
    };
    if let Some(server) = &args.server {
        return rebuild_on_server(server, args.api_key.as_deref(), &names).await;
    }
    let (store, set) = open_set(store_args).await?;
    // Every rebuild starts at once, fed by one read of the log: each event is read once for all
    // of them, and they fold in parallel (the wall time is the slowest one's, not the sum). A
    // fed rebuild may also fold in bulk (in memory, stored once: see `ReadModel::begin_bulk`),
    // so a single projection goes through the same path.
    let started = std::time::Instant::now();
    let rebuilds: Vec<(ProjectionName, Rebuild)> = set.rebuild_all(&names);
    let head = rebuilds
        .iter()
        .map(|(_, r)| r.progress().head)
        .max()
        .unwrap_or(0);
    // One bar: the position every rebuild has passed.
    let label = if names.len() == 1 {
        names[0].as_str()
    } else {
        "events (every rebuild)"
    };
    let bar = progress(Some(head.max(1)), label);
    loop {
        let progress: Vec<RebuildProgress> = rebuilds.iter().map(|(_, r)| r.progress()).collect();
        bar.set_length(progress.iter().map(|p| p.head).max().unwrap_or(0).max(1));
        bar.set_position(progress.iter().map(|p| p.position).min().unwrap_or(0));
        if progress.iter().all(|p| p.phase != RebuildPhase::Running) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tokio::signal::ctrl_c() => {
                for (_, rebuild) in &rebuilds {
                    rebuild.cancel();
                }
                let mut positions = Vec::new();
                for (name, rebuild) in &rebuilds {
                    let p = rebuild.wait().await;
                    positions.push(format!("{name} at {}", p.position));
                }
                bar.finish_and_clear();
                close(store, set).await;
                anyhow::bail!(
                    "interrupted: the rebuilds were cancelled ({}); the generations that had not \
                     swapped in yet are discarded and their old ones kept",
                    positions.join(", ")
                );
            }
        }
    }
    bar.finish_and_clear();
    let mut outcome = Ok(());
    for (name, rebuild) in &rebuilds {
        let done = rebuild.wait().await;
        match done.phase {
            RebuildPhase::Swapped => println!(
                "Rebuilt {name}: generation {}, {} events in {:.1} s ({:.0} events/s).",
                done.generation,
                done.events_applied,
                done.elapsed_ms as f64 / 1000.0,
                done.events_applied as f64 / (done.elapsed_ms.max(1) as f64 / 1000.0)
            ),
            _ => {
                if outcome.is_ok() {
                    outcome = Err(anyhow::anyhow!(
                        "the rebuild of {name} {}: {}",
                        if done.phase == RebuildPhase::Cancelled {
                            "was cancelled"
                        } else {
                            "failed"
                        },
                        done.error.unwrap_or_default()
                    ));
                }
            }
        }
    }
    if outcome.is_ok() && rebuilds.len() > 1 {
        let events = rebuilds
            .iter()
            .map(|(_, r)| r.progress().events_applied)
            .max()
            .unwrap_or(0);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "The {} rebuilds, run together: {events} events in {secs:.1} s ({:.0} events/s).",
            rebuilds.len(),
            events as f64 / secs.max(1e-9)
        );
    }
    close(store, set).await;
    outcome
}

/// A rebuild's progress as `GET /v1/admin/projections` and the rebuild endpoint answer it.
#[derive(Debug, Deserialize)]
struct RemoteRebuild {
    name: String,
    generation: u64,
    phase: String,
    events_applied: u64,
    position: u64,
    head: u64,
    events_per_second: f64,
    elapsed_ms: u64,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RemoteRebuilds {
    rebuilds: Vec<RemoteRebuild>,
}

#[derive(Debug, Deserialize)]
struct RemoteStatus {
    name: String,
    rebuild: Option<RemoteRebuild>,
}

#[derive(Debug, Deserialize)]
struct RemoteProjections {
    projections: Vec<RemoteStatus>,
}

/// Rebuilds `names` one after the other through a running server's admin endpoints, polling
/// `GET /v1/admin/projections` for the progress.
async fn rebuild_on_server(
    server: &str,
    api_key: Option<&str>,
    names: &[ProjectionName],
) -> anyhow::Result<()> {
    let api_key =
        api_key.context("--server needs --api-key (or EMPORIUM_API_KEY) with scope admin")?;
    let base = server.trim_end_matches('/');
    let client = reqwest::Client::new();
    for &name in names {
        let started: RemoteRebuilds = send_json(
            client
                .post(format!("{base}/v1/admin/projections/{name}/rebuild"))
                .bearer_auth(api_key),
            server,
        )
        .await?;
        let generation = started
            .rebuilds
            .iter()
            .find(|r| r.name == name.as_str())
            .map(|r| r.generation)
            .with_context(|| format!("{server} did not start a rebuild of {name}"))?;
        let bar = progress(Some(1), name.as_str());
        let done = loop {
            let status: anyhow::Result<RemoteProjections> = send_json(
                client
                    .get(format!("{base}/v1/admin/projections"))
                    .bearer_auth(api_key),
                server,
            )
            .await;
            let status = match status {
                Ok(status) => status,
                Err(error) => {
                    bar.finish_and_clear();
                    return Err(error);
                }
            };
            let rebuild = status
                .projections
                .into_iter()
                .find(|p| p.name == name.as_str())
                .and_then(|p| p.rebuild)
                .filter(|r| r.generation >= generation);
            let Some(rebuild) = rebuild else {
                bar.finish_and_clear();
                anyhow::bail!("{server} no longer reports the rebuild of {name}");
            };
            bar.set_length(rebuild.head.max(1));
            bar.set_position(rebuild.position);
            if rebuild.phase != "running" {
                break rebuild;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tokio::signal::ctrl_c() => {
                    bar.finish_and_clear();
                    anyhow::bail!(
                        "interrupted: the rebuild of {name} goes on on {server} (poll `GET \
                         /v1/admin/projections`)"
                    );
                }
            }
        };
        bar.finish_and_clear();
        if done.phase != "swapped" {
            anyhow::bail!(
                "the rebuild of {name} on {server} {}{}",
                if done.phase == "cancelled" {
                    "was cancelled"
                } else {
                    "failed"
                },
                done.error.map(|e| format!(": {e}")).unwrap_or_default()
            );
        }
        println!(
            "Rebuilt {name} on {server}: generation {}, {} events in {:.1} s ({:.0} events/s).",
            done.generation,
            done.events_applied,
            done.elapsed_ms as f64 / 1000.0,
            done.events_per_second
        );
    }
    Ok(())
}

/// Sends `request`, and decodes a 2xx JSON answer; any other answer is a one-line error.
async fn send_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    server: &str,
) -> anyhow::Result<T> {
    let response = request
        .send()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("reading the answer of {server}"))?;
    if !status.is_success() {
        anyhow::bail!(
            "{server} answered {status}: {}",
            super::problem_detail(&body)
        );
    }
    serde_json::from_str(&body).with_context(|| format!("{server} answered unexpected JSON"))
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", bytes as f64 / 1_073_741_824.0),
    }
}
