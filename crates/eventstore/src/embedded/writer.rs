//! The one thread that owns the tail of the log.
//!
//! Appends queue to it through a bounded channel. It takes everything queued (up to a group
//! limit), checks each request's expected versions against its authoritative stream heads (the
//! index plus the effects of the earlier requests of the same group), encodes the accepted ones as
//! frames into one buffer, writes it with one `pwrite`, makes it durable with one `fdatasync`
//! (group commit), publishes the new frames to the index and the head watch, and only then answers.
//! A failed write or sync poisons the store: nothing sequenced after it is ever acknowledged.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::index::{FrameLoc, Index, Segment};
use super::recovery::{open_segment, segment_name};
use super::{Shared, read};
use crate::frame::{self, FrameView, HEADER_LEN};
use crate::{AppendOutcome, AppendRequest, Position, StoreError, StreamHead};

pub(crate) type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

pub(crate) enum Command {
    Append {
        request: AppendRequest,
        reply: Reply,
    },
    /// Stop after the appends queued before it; answered once the files are closed.
    Close(oneshot::Sender<()>),
}

pub(crate) struct Limits {
    pub group_appends_max: usize,
    pub group_bytes_max: usize,
    pub segment_bytes_max: u64,
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub log_dir: PathBuf,
    pub limits: Limits,
    /// The segment being appended to, its number in `Index::segments` and its length.
    pub tail: Arc<File>,
    pub tail_no: u32,
    pub tail_len: u64,
    pub next_position: Position,
    /// Held for as long as the writer runs: one process per data directory.
    pub dir_lock: Option<File>,
}

/// What became of one request of a group.
enum Verdict {
    Done(Result<AppendOutcome, StoreError>),
    /// Accepted: its frame is `buf[frame]`.
    Accepted {
        first_position: Position,
        frame: std::ops::Range<usize>,
        heads: Vec<u64>,
    },
    /// Same command id as the earlier request `usize` of this group.
    DuplicateOf(usize),
}

impl Writer {
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut group: Vec<(AppendRequest, Reply)> = Vec::new();
        let mut close: Option<oneshot::Sender<()>> = None;
        while close.is_none() {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut bytes = 0;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append { request, reply } => {
                        bytes += approx_len(&request);
                        group.push((request, reply));
                    }
                    Command::Close(reply) => {
                        close = Some(reply);
                        break;
                    }
                }
                if group.len() >= self.limits.group_appends_max
                    || bytes >= self.limits.group_bytes_max
                {
                    break;
                }
                next = rx.try_recv().ok();
            }
            // The appenders answered by the previous group are submitting again right now: give
            // them a few scheduler turns (no timer) so that groups do not alternate big and tiny.
            let mut turns = 0;
            while close.is_none() && group.len() < self.limits.group_appends_max && turns < 8 {
                std::thread::yield_now();
                turns += 1;
                let before = group.len();
                while group.len() < self.limits.group_appends_max {
                    match rx.try_recv() {
                        Ok(Command::Append { request, reply }) => group.push((request, reply)),
                        Ok(Command::Close(reply)) => {
                            close = Some(reply);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if group.len() == before && turns >= 2 {
                    break;
                }
            }
            if !group.is_empty() {
                self.commit(&mut group);
            }
        }
        // Closed: refuse what is still queued, release the directory, then answer.
        rx.close();
        while let Ok(command) = rx.try_recv() {
            if let Command::Append { reply, .. } = command {
                let _ = reply.send(Err(StoreError::Closed));
            }
        }
        drop(self.dir_lock.take());
        if let Some(reply) = close {
            let _ = reply.send(());
        }
    }

    fn commit(&mut self, group: &mut Vec<(AppendRequest, Reply)>) {
        if let Some(reason) = self.shared.poisoned() {
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Err(poisoned_error(&reason)));
            }
            return;
        }
        if self.tail_len >= self.limits.segment_bytes_max
            && let Err(e) = self.roll()
        {
            self.shared
                .poison(format!("cannot start a new segment: {e}"));
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Err(StoreError::Io(clone_io(&e))));
            }
            return;
        }
        let group_start = self.tail_len as u32;
        let mut buf = Vec::with_capacity(group.iter().map(|(r, _)| approx_len(r)).sum());
        let verdicts = self.decide(group, group_start, &mut buf);

        let written = if buf.is_empty() {
            Ok(())
        } else {
            self.tail
                .write_all_at(&buf, self.tail_len)
                .and_then(|()| self.tail.sync_data())
        };
        if let Err(e) = written {
            let reason = format!("writing the log failed: {e}");
            tracing::error!(%reason, "event store poisoned");
            self.shared.poison(reason);
            for ((_, reply), verdict) in group.drain(..).zip(verdicts) {
                let answer = match verdict {
                    Verdict::Done(answer) => answer,
                    _ => Err(StoreError::Io(clone_io(&e))),
                };
                let _ = reply.send(answer);
            }
            return;
        }

        let buf = Bytes::from(buf);
        let mut outcomes: Vec<Option<AppendOutcome>> = Vec::with_capacity(group.len());
        {
            let mut index = self.shared.index.write();
            for ((request, _), verdict) in group.iter().zip(&verdicts) {
                let Verdict::Accepted {
                    first_position,
                    frame,
                    heads,
                } = verdict
                else {
                    outcomes.push(None);
                    continue;
                };
                outcomes.push(Some(publish(
                    &mut index,
                    request,
                    *first_position,
                    heads,
                    &buf,
                    frame,
                    self.tail_no,
                    self.tail_len,
                )));
            }
            self.tail_len += buf.len() as u64;
            self.next_position = index.head + 1;
        }
        self.shared.head_tx.send_replace(self.next_position - 1);

        for (i, ((_, reply), verdict)) in group.drain(..).zip(verdicts).enumerate() {
            let answer = match verdict {
                Verdict::Done(answer) => answer,
                Verdict::Accepted { .. } => outcomes[i].clone().ok_or(StoreError::Closed),
                Verdict::DuplicateOf(j) => outcomes[j]
                    .clone()
                    .map(|o| AppendOutcome {
                        duplicate: true,
                        ..o
                    })
                    .ok_or(StoreError::Closed),
            };
            let _ = reply.send(answer);
        }
    }

    /// Checks every request of the group in order and encodes the accepted ones into `buf`.
    fn decide(
        &self,
        group: &[(AppendRequest, Reply)],
        group_start: u32,
        buf: &mut Vec<u8>,
    ) -> Vec<Verdict> {
        let index = self.shared.index.read();
        let mut next_position = self.next_position;
        // Stream -> its length and last event id after the accepted requests of this group so
        // far.
        let mut heads: HashMap<&str, (u64, Uuid)> = HashMap::new();
        let mut commands: HashMap<&str, usize> = HashMap::new();
        let mut verdicts = Vec::with_capacity(group.len());
        'requests: for (i, (request, _)) in group.iter().enumerate() {
            if let Some(command_id) = request.command_id.as_deref() {
                if let Some(&j) = commands.get(command_id) {
                    verdicts.push(Verdict::DuplicateOf(j));
                    continue;
                }
                match find_command(&index, command_id) {
                    Ok(Some(outcome)) => {
                        verdicts.push(Verdict::Done(Ok(outcome)));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        verdicts.push(Verdict::Done(Err(e)));
                        continue;
                    }
                }
            }
            let mut first_versions = Vec::with_capacity(request.writes.len());
            for write in &request.writes {
                let (len, in_group) = match heads.get(write.stream.as_str()) {
                    Some(&(len, last)) => (len, Some(last)),
                    None => (index.stream_len(&write.stream), None),
                };
                let last_event_id = || match in_group {
                    Some(last) => Ok(Some(last)),
                    None => stored_last_event_id(&index, &write.stream, len),
                };
                if let Err(conflict) = write.expected.check(&write.stream, len, last_event_id) {
                    verdicts.push(Verdict::Done(Err(conflict)));
                    continue 'requests;
                }
                first_versions.push(len);
            }
            let first_position = next_position;
            let start = buf.len();
            frame::encode(buf, group_start, first_position, request, &first_versions);
            for (write, first_version) in request.writes.iter().zip(&mut first_versions) {
                *first_version += write.events.len() as u64;
                // `validate_request` refuses a write without events.
                let last = write.events.last().map_or(Uuid::nil(), |e| e.event_id);
                heads.insert(write.stream.as_str(), (*first_version, last));
                next_position += write.events.len() as u64;
            }
            if let Some(command_id) = request.command_id.as_deref() {
                commands.insert(command_id, i);
            }
            verdicts.push(Verdict::Accepted {
                first_position,
                frame: start..buf.len(),
                heads: first_versions,
            });
        }
        verdicts
    }

    /// Starts a new segment: the current one is complete and durable (every group is synced).
    fn roll(&mut self) -> std::io::Result<()> {
        let path = self.log_dir.join(segment_name(self.next_position));
        let file = open_segment(&path, true).map_err(|e| match e {
            StoreError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        })?;
        sync_dir(&self.log_dir)?;
        let file = Arc::new(file);
        let mut index = self.shared.index.write();
        if let Some(sealed) = index.segments.last() {
            self.shared.index_sealed(vec![sealed.path.to_path_buf()]);
        }
        self.tail_no = u32::try_from(index.segments.len()).map_err(std::io::Error::other)?;
        index.segments.push(Segment {
            path: Arc::from(path.as_path()),
            file: file.clone(),
        });
        self.tail = file;
        self.tail_len = 0;
        Ok(())
    }
}

/// The id of the last event of `stream`, which holds `len` events, as stored.
///
/// Only an [`crate::ExpectedVersion::LastEvent`] asks for it; the command service on this store
/// never sends one (it is the log's only writer, see [`crate::EventStore::submit`]), so the read,
/// from the payload cache or one `pread` on the writer's thread, stays off the usual path.
fn stored_last_event_id(index: &Index, stream: &str, len: u64) -> Result<Option<Uuid>, StoreError> {
    let Some(version) = len.checked_sub(1) else {
        return Ok(None);
    };
    let plan = read::plan_stream(index, stream, version, 1);
    let events = read::decode_stream(plan.frames, stream, version, 1)?;
    Ok(events
        .first()
        .filter(|e| e.version == version)
        .map(|e| e.event_id))
}

/// Records an accepted, durable request in the index; returns its outcome.
#[allow(clippy::too_many_arguments)]
fn publish(
    index: &mut Index,
    request: &AppendRequest,
    first_position: Position,
    heads: &[u64],
    buf: &Bytes,
    frame: &std::ops::Range<usize>,
    segment: u32,
    group_offset: u64,
) -> AppendOutcome {
    let mut position = first_position;
    let mut streams = Vec::with_capacity(request.writes.len());
    for (write, &len) in request.writes.iter().zip(heads) {
        let count = write.events.len() as u64;
        let pushed = index.push_stream(&write.stream, len - count, position, count as u32);
        assert!(pushed, "the writer's heads and the index disagree");
        position += count;
        streams.push(StreamHead {
            stream: write.stream.clone(),
            version: len - 1,
        });
    }
    if let Some(command_id) = &request.command_id {
        index.insert_command(command_id, first_position);
    }
    let loc = FrameLoc {
        first_position,
        segment,
        offset: (group_offset + frame.start as u64) as u32,
        len: (frame.len() - HEADER_LEN) as u32,
        count: (position - first_position) as u32,
    };
    index.push_frame(loc, Some(buf.slice(frame.start + HEADER_LEN..frame.end)));
    AppendOutcome {
        first_position,
        last_position: position - 1,
        streams,
        duplicate: false,
    }
}

/// The outcome of the earlier append of `command_id`, if there was one. The index knows the
/// frames whose command id has the same hash; the frame itself confirms the id.
fn find_command(index: &Index, command_id: &str) -> Result<Option<AppendOutcome>, StoreError> {
    for position in index.command_frames(command_id) {
        let Some(source) = index.frame_of(position).and_then(|f| index.source(f)) else {
            continue;
        };
        let payload = super::read::load(source)?;
        let view = FrameView::parse(&payload).map_err(|e| StoreError::Corrupt {
            file: "(index)".into(),
            offset: 0,
            reason: e.0.into(),
        })?;
        if view.command_id == Some(command_id) {
            return Ok(Some(view.outcome(true)));
        }
    }
    Ok(None)
}

fn approx_len(request: &AppendRequest) -> usize {
    request
        .writes
        .iter()
        .flat_map(|w| &w.events)
        .map(|e| e.payload.len() + 64)
        .sum::<usize>()
        + 64
}

pub(crate) fn poisoned_error(reason: &str) -> StoreError {
    StoreError::Io(std::io::Error::other(format!(
        "the event log stopped accepting writes after an earlier failure: {reason}"
    )))
}

fn clone_io(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
