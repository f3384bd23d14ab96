//! Snapshots: one small file per stream, replaced atomically (write a temporary file, fsync,
//! rename, fsync the directory). The file name is a hash of the stream name (names may be longer
//! than a file name may be); the file holds the name, so a load checks it.
//!
//! ```text
//! magic "EMPS" | crc32c of the body (u32 LE) | body: postcard of SnapshotFile
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::writer::sync_dir;
use crate::{Snapshot, StoreError, StreamVersion};

const MAGIC: &[u8; 4] = b"EMPS";

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    stream: String,
    version: StreamVersion,
    schema: String,
    state: Vec<u8>,
}

fn path_of(dir: &Path, stream: &str) -> PathBuf {
    let digest = Sha256::digest(stream.as_bytes());
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{name}.snap"))
}

/// Reads the snapshot of `stream`. A damaged file is only a lost cache: it is ignored.
pub(crate) fn load(dir: &Path, stream: &str) -> Result<Option<Snapshot>, StoreError> {
    let path = path_of(dir, stream);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match decode(&bytes) {
        Some(file) if file.stream == stream => Ok(Some(Snapshot {
            stream: file.stream,
            version: file.version,
            schema: file.schema,
            state: Bytes::from(file.state),
        })),
        Some(_) => Ok(None),
        None => {
            tracing::warn!(file = %path.display(), "ignoring a damaged snapshot file");
            Ok(None)
        }
    }
}

fn decode(bytes: &[u8]) -> Option<SnapshotFile> {
    let body = bytes.strip_prefix(MAGIC)?;
    let (crc, body) = body.split_first_chunk::<4>()?;
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
        return None;
    }
    postcard::from_bytes(body).ok()
}

/// Writes `snapshot` unless a newer one is stored. The caller serializes saves.
pub(crate) fn save(dir: &Path, snapshot: Snapshot) -> Result<(), StoreError> {
    if let Some(existing) = load(dir, &snapshot.stream)?
        && existing.version > snapshot.version
    {
        return Ok(());
    }
    let path = path_of(dir, &snapshot.stream);
    let body = postcard::to_stdvec(&SnapshotFile {
        stream: snapshot.stream,
        version: snapshot.version,
        schema: snapshot.schema,
        state: snapshot.state.to_vec(),
    })
    .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(MAGIC)?;
        file.write_all(&crc32c::crc32c(&body).to_le_bytes())?;
        file.write_all(&body)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(())
}
