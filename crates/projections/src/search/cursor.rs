//! Opaque `search_after` cursors.
//!
//! Every sort is a total order on `(key, sku)` where `key` is a `u64` with "smaller comes first"
//! (see [`super::collector::SortKey`]) and the SKU breaks ties. A cursor carries the last hit's
//! `(key, sku)` plus the sort and a fingerprint of the request it belongs to, hex-encoded. The
//! next page collects only documents strictly after that position: cost does not grow with the
//! page number (no deep-offset cliff).
//!
//! Layout (version 1): `[1][sort code][fingerprint u64 LE][key u64 LE][sku len u8][sku]`.

use super::error::SearchError;
use super::types::SortOrder;
use super::validate::{CURSOR_CHARS_MAX, ValidRequest, is_valid_sku};

const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 1 + 8 + 8 + 1;

/// A position in a result list: everything after `(key, sku)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct After {
    pub key: u64,
    pub sku: String,
}

pub(crate) fn encode(sort: SortOrder, fingerprint: u64, after: &After) -> String {
    let mut bytes = Vec::with_capacity(HEADER_LEN + after.sku.len());
    bytes.push(VERSION);
    bytes.push(sort.code());
    bytes.extend_from_slice(&fingerprint.to_le_bytes());
    bytes.extend_from_slice(&after.key.to_le_bytes());
    // A valid SKU is at most 64 bytes, so its length fits.
    bytes.push(u8::try_from(after.sku.len()).unwrap_or(u8::MAX));
    bytes.extend_from_slice(after.sku.as_bytes());
    hex::encode(bytes)
}

pub(crate) fn decode(
    cursor: &str,
    sort: SortOrder,
    fingerprint: u64,
) -> Result<After, SearchError> {
    let fail = |reason| SearchError::InvalidCursor { reason };
    if cursor.len() > CURSOR_CHARS_MAX {
        return Err(fail("too long"));
    }
    let bytes = hex::decode(cursor).map_err(|_| fail("not a cursor"))?;
    if bytes.len() < HEADER_LEN {
        return Err(fail("truncated"));
    }
    let (header, sku) = bytes.split_at(HEADER_LEN);
    if header[0] != VERSION {
        return Err(fail("unknown version"));
    }
    if header[1] != sort.code() {
        return Err(fail("made for another sort order"));
    }
    let u64_at = |at: usize| {
        header
            .get(at..at + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_le_bytes)
            .ok_or(fail("truncated"))
    };
    if u64_at(2)? != fingerprint {
        return Err(fail("made for another query or other filters"));
    }
    let key = u64_at(10)?;
    if usize::from(header[18]) != sku.len() {
        return Err(fail("bad length"));
    }
    let sku = std::str::from_utf8(sku).map_err(|_| fail("bad SKU"))?;
    if !is_valid_sku(sku) {
        return Err(fail("bad SKU"));
    }
    Ok(After {
        key,
        sku: sku.to_string(),
    })
}

/// FNV-1a over everything that defines the result list except the page size, so a cursor is only
/// accepted by the request it was made for.
pub(crate) fn fingerprint(req: &ValidRequest) -> u64 {
    let mut h = Fnv::new();
    for word in &req.query.words {
        h.write(word.as_bytes());
        h.write(&[0]);
    }
    h.write(&[u8::from(req.query.last_is_prefix), 0xff]);
    if let Some(category) = &req.category {
        h.write(category.encoded_str().as_bytes());
    }
    h.write(&[0xfe]);
    for bound in [req.min_price, req.max_price] {
        match bound {
            Some(v) => {
                h.write(&[1]);
                h.write(&v.to_le_bytes());
            }
            None => h.write(&[0]),
        }
    }
    h.write(&[u8::from(req.in_stock_only), req.sort.code()]);
    h.finish()
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let after = After {
            key: 42,
            sku: "EL-1".into(),
        };
        let c = encode(SortOrder::PriceAsc, 7, &after);
        assert_eq!(decode(&c, SortOrder::PriceAsc, 7).unwrap(), after);
        assert!(decode(&c, SortOrder::PriceDesc, 7).is_err());
        assert!(decode(&c, SortOrder::PriceAsc, 8).is_err());
        assert!(decode(&c[..c.len() - 2], SortOrder::PriceAsc, 7).is_err());
        assert!(decode("zz", SortOrder::PriceAsc, 7).is_err());
        assert!(decode("", SortOrder::PriceAsc, 7).is_err());
        assert!(decode(&"0".repeat(600), SortOrder::PriceAsc, 7).is_err());
    }
}
