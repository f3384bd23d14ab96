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
//! index)` pairs held in one array, and compares whole keys only among rows whose first 16
//! bytes are the same (none, for keys that differ early, as SKUs do).

/// Sorts `items` by `key` in byte order (what `a.cmp(b)` on the keys gives). Not stable:
/// items with equal keys may come in any order.
pub(crate) fn sort_by_key_bytes<T>(items: &mut [T], key: impl Fn(&T) -> &[u8]) {
    if items.len() < 2 {
        return;
    }
    // Ordered by the prefix, which agrees with the keys' order wherever the prefixes differ.
    items.sort_by_cached_key(|item| prefix(key(item)));
    // Rows whose prefixes are equal are now adjacent: the whole keys decide among them.
    for run in items.chunk_by_mut(|a, b| prefix(key(a)) == prefix(key(b))) {
        if run.len() > 1 {
            run.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        }
    }
}

/// The first 16 bytes of `key`, zero-padded, as a big-endian integer: if two prefixes differ,
/// their keys compare the same way (a key shorter than 16 bytes pads with zeros, which sort
/// lowest, so it stays before the longer keys it begins).
fn prefix(key: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(bytes)
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
        /// the padding must not confuse with a shorter key) and any lengths around 16.
        #[test]
        fn orders_as_the_keys_compare(
            keys in prop::collection::vec(
                prop::collection::vec(prop::sample::select(vec![0u8, 1, b'A', 0xff]), 0..20),
                0..60,
            )
        ) {
            let mut expected = keys.clone();
            expected.sort();
            prop_assert_eq!(sorted(keys), expected);
        }
    }
}
