//! `emporium events tail`: follows the log live, one JSON line per event.
//!
//! From a data directory or PostgreSQL it subscribes to the store itself; with `--server` it
//! reads a running server's Server-Sent Events stream (`GET /v1/events/stream`), which is the
//! only way to follow an embedded store that a server has open (one process per directory).

use std::io::Write;

use anyhow::Context;
use emporium_api::history;
use emporium_eventstore::ReadFilter;
use futures::StreamExt;

use super::open_event_store;
use crate::cli::{StoreArgs, TailArgs};

pub async fn run(store_args: &StoreArgs, args: TailArgs) -> anyhow::Result<()> {
    if let Some(server) = &args.server {
        return tail_server(server, args.api_key.as_deref(), &args).await;
    }
    let store = open_event_store(store_args, false).await?;
    let shared = store.shared();
    let after = match args.after {
        Some(after) => after,
        None => shared.head().await?,
    };
    let filter = ReadFilter {
        stream_prefix: args.stream.clone().filter(|s| !s.is_empty()),
        event_types: args.types.clone(),
    };
    let mut subscription = shared.subscribe(after, filter).await?;
    let mut stdout = std::io::stdout();
    let mut line = Vec::with_capacity(64 * 1024);
    let outcome: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                batch = subscription.next() => {
                    let Some(batch) = batch else { return Ok(()) };
                    let batch = batch.context("following the event log")?;
                    line.clear();
                    for recorded in &batch {
                        history::write_json_line(&mut line, &recorded.event_ref());
                    }
                    if let Err(e) = stdout.write_all(&line).and_then(|()| stdout.flush()) {
                        // The reader went away (`emporium events tail | head -1`).
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            return Ok(());
                        }
                        return Err(e.into());
                    }
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
    .await;
    drop(subscription);
    store.close().await;
    outcome
}

/// Follows `GET /v1/events/stream` of a running server and prints each message's data.
async fn tail_server(server: &str, api_key: Option<&str>, args: &TailArgs) -> anyhow::Result<()> {
    let api_key =
        api_key.context("--server needs --api-key (or EMPORIUM_API_KEY) with scope events")?;
    let mut url = format!("{}/v1/events/stream?", server.trim_end_matches('/'));
    let mut query = Vec::new();
    if let Some(after) = args.after {
        query.push(format!("after={after}"));
    }
    if let Some(stream) = &args.stream {
        query.push(format!("stream={}", encode(stream)));
    }
    if !args.types.is_empty() {
        query.push(format!("type={}", encode(&args.types.join(","))));
    }
    url.push_str(&query.join("&"));
    let client = reqwest::Client::new();
    let mut response = client
        .get(&url)
        .bearer_auth(api_key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!(
            "{server} answered {status}: {}",
            super::problem_detail(&body)
        );
    }
    let mut pending = String::new();
    let mut stdout = std::io::stdout();
    loop {
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk.context("reading the event stream")?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(chunk) = chunk else {
            anyhow::bail!("{server} closed the event stream");
        };
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let message: String = pending.drain(..end + 2).collect();
            let mut data = String::new();
            let mut event = None;
            for line in message.lines() {
                if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                } else if let Some(value) = line.strip_prefix("event:") {
                    event = Some(value.trim().to_owned());
                }
            }
            if event.as_deref() == Some("error") {
                anyhow::bail!("{server}: {data}");
            }
            if data.is_empty() {
                continue;
            }
            if let Err(e) = writeln!(stdout, "{data}").and_then(|()| stdout.flush()) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e.into());
            }
        }
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
