//! Putting rows in the byte order of their keys without following a pointer per comparison.
//!
//! The redb models write their rows in key order (consecutive B-tree inserts then share pages),
//! and those keys (SKUs) live on the heap or inside the entries of a large hash map. A plain
//! `sort_unstable_by(|a, b| a.key.cmp(&b.key))` follows two pointers and calls `memcmp` for
//! each of its n·log n comparisons, and on a fold of 200,000 rows nearly every one of those
//! reads misses the cache: the sorts were a fifth of the stock model's and a sixth of the
//! catalog's final write in a rebuild's profile (BENCHMARKS.md, stop 20).
//!
//! [`sort_by_key_bytes`] reads each key once, sorts `(first 16 bytes as a big-endian integer,
//! index)` pairs held in one array, and goes on to the next 16 bytes only among rows whose first
//! 16 are the same (none, for keys that differ early, as SKUs do; most of them for the catalog's
//! listing keys, which begin with their category).

/// Runs of rows this short, alike so far, are finished by comparing their keys.
const SMALL_RUN: usize = 16;

/// Sorts `items` by `key` in byte order (what `a.cmp(b)` on the keys gives). Not stable:
/// items with equal keys may come in any order.
pub(crate) fn sort_by_key_bytes<T>(items: &mut [T], key: impl Fn(&T) -> &[u8]) {
    sort_from(items, &key, 0);
}

/// Sorts `items`, whose keys are all the same before `offset` (and go on past it).
fn sort_from<T>(items: &mut [T], key: &impl Fn(&T) -> &[u8], offset: usize) {
    if items.len() <= SMALL_RUN {
        items.sort_unstable_by(|a, b| tail(key(a), offset).cmp(tail(key(b), offset)));
        return;
    }
    // Ordered by the 16 bytes at `offset`, which agree with the keys' order wherever they
    // differ.
    items.sort_by_cached_key(|item| chunk(tail(key(item), offset)));
    // Rows alike up to `offset + 16` are now adjacent: the bytes after decide among those that
    // go on (the others are equal).
    for run in items.chunk_by_mut(|a, b| chunk(tail(key(a), offset)) == chunk(tail(key(b), offset)))
    {
        if run.len() > 1 && chunk(tail(key(&run[0]), offset)).1 == GOES_ON {
            sort_from(run, key, offset + 16);
        }
    }
}

/// The bytes of `key` from `offset` (none if it is shorter).
fn tail(key: &[u8], offset: usize) -> &[u8] {
    key.get(offset..).unwrap_or_default()
}

/// The length class of a key that goes on past the chunk.
const GOES_ON: u8 = 17;

/// The next 16 bytes of a key (`rest`), zero-padded, as a big-endian integer, and how many of
/// them there are (`GOES_ON`: more than 16). Ordered as the keys are: where the integers differ,
/// so do the keys, the same way; where they are the same, the shorter key comes first ("ab"
/// before "ab\0", both padded alike), and a key that goes on comes last.
fn chunk(rest: &[u8]) -> (u128, u8) {
    let mut bytes = [0u8; 16];
    let n = rest.len().min(16);
    bytes[..n].copy_from_slice(&rest[..n]);
    let length = u8::try_from(rest.len()).map_or(GOES_ON, |len| len.min(GOES_ON));
    (u128::from_be_bytes(bytes), length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sorted(mut keys: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        sort_by_key_bytes(&mut keys, |k| k.as_slice());
        keys
    }

    #[test]
    fn keys_alike_in_their_first_16_bytes_are_ordered_by_the_rest() {
        let keys: Vec<Vec<u8>> = [
            "SKU-0000000000000-b",
            "SKU-0000000000000-a",
            "SKU-0000000000000",
            "SKU-000000000000",
            "SKU-0000000000000\0",
            "A",
            "",
        ]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(sorted(keys), expected);
    }

    proptest! {
        /// The same order as sorting the keys themselves, for any bytes (zeros included, which
        /// the padding must not confuse with a shorter key), any lengths around 16 and 32, and
        /// long common beginnings (the listing keys' category).
        #[test]
        fn orders_as_the_keys_compare(
            common in prop::collection::vec(prop::sample::select(vec![0u8, b'A']), 0..40),
            keys in prop::collection::vec(
                (
                    any::<bool>(),
                    prop::collection::vec(prop::sample::select(vec![0u8, 1, b'A', 0xff]), 0..36),
                ),
                0..120,
            )
        ) {
            let keys: Vec<Vec<u8>> = keys
                .into_iter()
                .map(|(shared, tail)| if shared { [common.clone(), tail].concat() } else { tail })
                .collect();
            let mut expected = keys.clone();
            expected.sort();
            prop_assert_eq!(sorted(keys), expected);
        }
    }
}
