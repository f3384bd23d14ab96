//! Live subscriptions for both backends: catch up by scanning the log in bounded batches, then
//! wait for the durable head to move (a watch fed by the writer, and on PostgreSQL by
//! LISTEN/NOTIFY with a polling fallback), and scan again.
//!
//! The subscription is pulled: it reads the next batch only when the consumer asks for it, so a
//! slow subscriber holds at most one batch, whatever the write rate.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::{Position, ReadFilter, RecordedEvent, StoreError, Subscription};

/// One bounded step through the log.
pub(crate) struct Scan {
    /// The matching events, in position order.
    pub events: Vec<RecordedEvent>,
    /// Every event in `(after, scanned_to]` was considered; the next scan starts there.
    pub scanned_to: Position,
    /// The durable head when the scan ran: if `scanned_to` reached it, the subscriber is live.
    pub head: Position,
}

pub(crate) trait Source: Send + Sync + 'static {
    fn scan(
        &self,
        after: Position,
        filter: &ReadFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Scan, StoreError>> + Send;
}

struct State<S> {
    source: Arc<S>,
    head_rx: watch::Receiver<Position>,
    after: Position,
    filter: ReadFilter,
    batch_max: usize,
    poll: Option<Duration>,
    done: bool,
}

/// A subscription to `source` from `after`. `head_rx` must change whenever the durable head
/// moves (or `poll` must be set, so that it is re-checked regularly).
pub(crate) fn follow<S: Source>(
    source: Arc<S>,
    head_rx: watch::Receiver<Position>,
    after: Position,
    filter: ReadFilter,
    batch_max: usize,
    poll: Option<Duration>,
) -> Subscription {
    let state = State {
        source,
        head_rx,
        after,
        filter,
        batch_max: batch_max.max(1),
        poll,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            // Mark the current head as seen *before* scanning, so that an append published
            // during the scan wakes the wait below.
            st.head_rx.borrow_and_update();
            match st.source.scan(st.after, &st.filter, st.batch_max).await {
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                Ok(scan) => {
                    debug_assert!(scan.scanned_to >= st.after);
                    st.after = scan.scanned_to;
                    if !scan.events.is_empty() {
                        return Some((Ok(scan.events), st));
                    }
                    if scan.scanned_to < scan.head {
                        continue;
                    }
                }
            }
            let changed = match st.poll {
                Some(poll) => match tokio::time::timeout(poll, st.head_rx.changed()).await {
                    Ok(changed) => changed,
                    Err(_elapsed) => Ok(()),
                },
                None => st.head_rx.changed().await,
            };
            if changed.is_err() {
                st.done = true;
                return Some((Err(StoreError::Closed), st));
            }
        }
    })
    .boxed()
}
