//! Builders for requests and the per-backend test runners.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use emporium_eventstore::{
    AppendRequest, EmbeddedConfig, EmbeddedStore, EventData, ExpectedVersion, Metadata, StreamWrite,
};
use futures::FutureExt;
use uuid::Uuid;

pub fn event(event_type: &str, payload: &[u8]) -> EventData {
    EventData {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        payload: Bytes::copy_from_slice(payload),
        metadata: Metadata {
            recorded_at_micros: 1_700_000_000_000_000,
            ..Metadata::default()
        },
    }
}

/// A write of `n` events of type `Test.v1` with payloads `"{stream}:{i}"`.
pub fn write(stream: &str, expected: ExpectedVersion, n: usize) -> StreamWrite {
    StreamWrite {
        stream: stream.to_owned(),
        expected,
        events: (0..n)
            .map(|i| event("Test.v1", format!("{stream}:{i}").as_bytes()))
            .collect(),
    }
}

pub fn request(writes: Vec<StreamWrite>) -> AppendRequest {
    AppendRequest {
        writes,
        command_id: None,
    }
}

pub fn with_command(mut request: AppendRequest, command_id: &str) -> AppendRequest {
    request.command_id = Some(command_id.to_owned());
    request
}

/// A small configuration that exercises segment rolls and cache eviction.
pub fn small_config(dir: &std::path::Path) -> EmbeddedConfig {
    EmbeddedConfig {
        segment_bytes_max: 64 << 10,
        cache_bytes_max: 32 << 10,
        subscription_batch_max: 64,
        ..EmbeddedConfig::new(dir)
    }
}

/// Runs `test` against a fresh embedded store in a temporary directory.
pub async fn run_embedded<F, Fut>(test: F)
where
    F: FnOnce(EmbeddedStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(small_config(dir.path())).unwrap();
    let result = AssertUnwindSafe(test(store.clone())).catch_unwind().await;
    store.close().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
