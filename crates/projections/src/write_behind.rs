//! Write-behind: the stock rows of live batches, held in memory and written together.
//!
//! Why: under order traffic every order changes the stock rows of its SKUs, and the two models
//! that keep stock rows (stock levels, and the search projection's `search_stock`) each wrote
//! them in a redb transaction per live batch (every 20 ms). A transaction copies every B-tree
//! page it changes, so over a hundred thousand SKUs nearly every row update copied a 4 KiB leaf,
//! looked its pages up, checksummed and wrote them: a profile of `load orders` put 18% of the
//! machine's CPU there. Held and written at most every [`StorageConfig::write_behind`] (1 s), a
//! row changed many times in that second is written once and a leaf holding several changed rows
//! is copied once (BENCHMARKS.md, "Stop 17").
//!
//! What stays true:
//! - **Readers see every batch the runner published.** A read takes [`WriteBehind::read`] and
//!   looks at the held rows first, then at the table, through a read transaction begun *after*
//!   taking the guard. Held rows are forgotten only once they are committed, under the write
//!   lock, so a row missing from the held rows has its latest value in any snapshot begun after
//!   the guard was taken.
//! - **State and checkpoint are stored in one transaction**: the held rows are written with the
//!   position they are folded to. A crash loses at most the held progress; the model resumes
//!   from its stored checkpoint and folds those events again: nothing skipped, nothing twice.
//! - **A failed batch changes nothing held**: a batch is folded apart (reading the held rows)
//!   and absorbed whole once it is complete, and the model's checkpoint is the held position, so
//!   the runner resumes right after the last absorbed batch.
//!
//! [`StorageConfig::write_behind`]: crate::storage::StorageConfig::write_behind

use std::time::{Duration, Instant};

use compact_str::CompactString;
use emporium_eventstore::Position;
use parking_lot::{RwLock, RwLockReadGuard};
use rustc_hash::FxHashMap;

use crate::key_order::sort_by_key_bytes;

/// Rows held at most, whatever the interval: a bound on memory under any write rate (a stock
/// row held takes about 150 bytes).
const HELD_ROWS_MAX: usize = 200_000;

/// Rows keyed by SKU, held between writes; `R` is what the model stores for one SKU.
pub(crate) struct WriteBehind<R> {
    held: RwLock<Held<R>>,
    /// Zero: every batch is written at once.
    interval: Duration,
}

pub(crate) struct Held<R> {
    rows: FxHashMap<CompactString, R>,
    /// The position the held rows are folded to; 0: nothing held.
    position: Position,
    /// When the first batch now held was absorbed.
    since: Option<Instant>,
}

/// The held rows, for a reader (see the module docs for the order of reads).
pub(crate) struct HeldRows<'a, R>(RwLockReadGuard<'a, Held<R>>);

impl<R> HeldRows<'_, R> {
    pub(crate) fn get(&self, key: &str) -> Option<&R> {
        self.0.rows.get(key)
    }

    /// Every held row, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &R)> {
        self.0.rows.iter().map(|(k, r)| (k.as_str(), r))
    }
}

impl<R> WriteBehind<R> {
    pub(crate) fn new(interval: Duration) -> Self {
        WriteBehind {
            held: RwLock::new(Held {
                rows: FxHashMap::default(),
                position: 0,
                since: None,
            }),
            interval,
        }
    }

    /// The held rows; hold the guard for the whole read.
    pub(crate) fn read(&self) -> HeldRows<'_, R> {
        HeldRows(self.held.read())
    }

    /// The position the held rows are folded to; `None` if nothing is held.
    pub(crate) fn position(&self) -> Option<Position> {
        let held = self.held.read();
        (held.position > 0).then_some(held.position)
    }

    /// Takes in the rows of a complete batch that ends at `position`: a new key is inserted, a
    /// held one is updated by `update(held, new)`.
    pub(crate) fn absorb(
        &self,
        rows: impl IntoIterator<Item = (CompactString, R)>,
        position: Position,
        mut update: impl FnMut(&mut R, R),
    ) {
        let mut held = self.held.write();
        debug_assert!(position > held.position, "batches are absorbed in order");
        for (key, row) in rows {
            match held.rows.get_mut(&key) {
                Some(slot) => update(slot, row),
                None => {
                    held.rows.insert(key, row);
                }
            }
        }
        held.position = position;
        held.since.get_or_insert_with(Instant::now);
    }

    /// Whether the held rows should be written now: the interval has passed since the first of
    /// them was absorbed, or there are too many.
    pub(crate) fn due(&self) -> bool {
        let held = self.held.read();
        held.since
            .is_some_and(|since| since.elapsed() >= self.interval)
            || held.rows.len() >= HELD_ROWS_MAX
    }

    /// Writes the held rows with `write(position, rows in key order)` and forgets them once it
    /// returns `Ok` (readers keep finding them meanwhile). Only the model's runner calls this and
    /// [`WriteBehind::absorb`], so nothing is absorbed while it writes. Returns whether anything
    /// was held.
    pub(crate) fn write_out<E>(
        &self,
        write: impl FnOnce(Position, &[(&str, &R)]) -> Result<(), E>,
    ) -> Result<bool, E> {
        let position = {
            let held = self.held.read();
            if held.position == 0 {
                return Ok(false);
            }
            let mut rows: Vec<(&str, &R)> =
                held.rows.iter().map(|(k, r)| (k.as_str(), r)).collect();
            // Key order: consecutive inserts land on the same B-tree pages.
            sort_by_key_bytes(&mut rows, |row| row.0.as_bytes());
            write(held.position, &rows)?;
            held.position
        };
        let forgotten = {
            let mut held = self.held.write();
            if held.position != position {
                // Not reachable with one runner; keep the rows rather than lose a batch.
                return Ok(true);
            }
            held.position = 0;
            held.since = None;
            std::mem::take(&mut held.rows)
        };
        // Freed outside the lock: readers wait for nothing but the swap.
        drop(forgotten);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn absorb(behind: &WriteBehind<u64>, rows: &[(&str, u64)], position: Position) {
        behind.absorb(
            rows.iter().map(|(k, v)| (CompactString::from(*k), *v)),
            position,
            |held, new| *held += new,
        );
    }

    #[test]
    fn held_rows_are_read_until_written_and_forgotten_after() {
        let behind = WriteBehind::new(Duration::from_secs(3600));
        assert_eq!(behind.position(), None);
        absorb(&behind, &[("b", 2), ("a", 1)], 10);
        absorb(&behind, &[("b", 5)], 12);
        assert_eq!(behind.position(), Some(12));
        assert_eq!(behind.read().get("b"), Some(&7));
        assert!(!behind.due());

        let mut written = Vec::new();
        let wrote = behind.write_out(|position, rows| {
            written = rows.iter().map(|(k, v)| (k.to_string(), **v)).collect();
            assert_eq!(position, 12);
            Ok::<(), ()>(())
        });
        assert_eq!(wrote, Ok(true));
        assert_eq!(written, vec![("a".to_owned(), 1), ("b".to_owned(), 7)]);
        assert_eq!(behind.position(), None);
        assert_eq!(behind.read().get("b"), None);
        assert_eq!(behind.write_out(|_, _| Err::<(), ()>(())), Ok(false));
    }

    #[test]
    fn a_failed_write_keeps_the_rows() {
        let behind = WriteBehind::new(Duration::ZERO);
        absorb(&behind, &[("a", 1)], 3);
        assert!(behind.due(), "a zero interval writes every batch");
        assert_eq!(behind.write_out(|_, _| Err("disk full")), Err("disk full"));
        assert_eq!(behind.position(), Some(3));
        assert_eq!(behind.read().get("a"), Some(&1));
    }
}
