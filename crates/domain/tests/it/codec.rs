//! The persisted format: golden bytes of every event type, round trips, the upcaster seam,
//! readable JSON, and stream names.
//!
//! The golden files (`tests/golden/{EventType}.hex`) are the released encodings. A missing file
//! is written by `EMPORIUM_WRITE_GOLDEN=1 cargo test -p emporium-domain golden`; an existing
//! one is never overwritten: a changed encoding is a new event version, not a new fixture.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use emporium_domain::codec::{DecodeError, Upcaster, decode_payload, decode_with, encode_payload};
use emporium_domain::order::{
    OrderCancelled, OrderExpired, OrderRefunded, OrderShipped, PaymentAuthorized, PaymentFailed,
};
use emporium_domain::product::{
    PriceChanged, ProductCreated, ProductDetailsUpdated, ProductDiscontinued,
};
use emporium_domain::stock::{
    ReleaseReason, ReservationReleased, StockAdjusted, StockReceived, StockShipped,
    StockTransferred,
};
use emporium_domain::{
    CategoryPath, EVENT_TYPES, Event, Money, OrderEvent, ProductEvent, STATE_SCHEMA, Sku, State,
    StockEvent, StreamRef, Timestamp, decode,
};
use serde::{Deserialize, Serialize};

use crate::support::*;

/// One sample of every event type, with every field set to something non-trivial.
fn samples() -> Vec<Event> {
    let id = oid(7);
    let t = at(NOW);
    vec![
        ProductEvent::Created(ProductCreated {
            sku: sku("HP-1"),
            name: "Studio Headphones".into(),
            description: "Closed-back.\nFolding.".into(),
            category: "Electronics/Audio/Headphones".parse().unwrap(),
            price: eur(19_999),
            tags: vec!["audio".into(), "wired".into()],
            attributes: BTreeMap::from([
                ("color".into(), "black".into()),
                ("impedance".into(), "32 Ω".into()),
            ]),
            at: t,
        })
        .into(),
        ProductEvent::DetailsUpdated(ProductDetailsUpdated {
            sku: sku("HP-1"),
            name: "Studio Headphones II".into(),
            description: String::new(),
            category: "Electronics/Audio".parse().unwrap(),
            tags: vec![],
            attributes: BTreeMap::from([("color".into(), "white".into())]),
            at: t,
        })
        .into(),
        ProductEvent::PriceChanged(PriceChanged {
            sku: sku("HP-1"),
            previous: eur(19_999),
            price: money(-5, "JPY"),
            at: t,
        })
        .into(),
        ProductEvent::Discontinued(ProductDiscontinued {
            sku: sku("HP-1"),
            at: at(-1),
        })
        .into(),
        StockEvent::Received(StockReceived {
            sku: sku("HP-1"),
            warehouse: wh("berlin"),
            quantity: 300,
            reference: Some("PO-2026-1142".into()),
            at: t,
        })
        .into(),
        StockEvent::Adjusted(StockAdjusted {
            sku: sku("HP-1"),
            warehouse: wh("berlin"),
            previous: 300,
            counted: 297,
            reason: "cycle count".into(),
            at: t,
        })
        .into(),
        StockEvent::Transferred(StockTransferred {
            sku: sku("HP-1"),
            from: wh("berlin"),
            to: wh("paris_2"),
            quantity: 100,
            at: t,
        })
        .into(),
        reserved("HP-1", id, vec![alloc("berlin", 150), alloc("paris_2", 2)]),
        StockEvent::ReservationReleased(ReservationReleased {
            sku: sku("HP-1"),
            order_id: id,
            allocations: vec![alloc("berlin", 150)],
            reason: ReleaseReason::OrderExpired,
            at: t,
        })
        .into(),
        StockEvent::Shipped(StockShipped {
            sku: sku("HP-1"),
            order_id: id,
            allocations: vec![alloc("paris_2", 2)],
            at: t,
        })
        .into(),
        placed(id, &[("HP-1", 2, 19_999), ("CABLE.3m", 1, 999)]),
        OrderEvent::PaymentAuthorized(PaymentAuthorized {
            order_id: id,
            amount: eur(40_997),
            payment_ref: "pi_3N2x".into(),
            at: t,
        })
        .into(),
        captured(id, 40_997),
        OrderEvent::PaymentFailed(PaymentFailed {
            order_id: id,
            payment_ref: "pi_3N2x".into(),
            reason: "card declined".into(),
            at: t,
        })
        .into(),
        OrderEvent::Cancelled(OrderCancelled {
            order_id: id,
            reason: "customer asked".into(),
            at: t,
        })
        .into(),
        OrderEvent::Expired(OrderExpired {
            order_id: id,
            at: t,
        })
        .into(),
        OrderEvent::Shipped(OrderShipped {
            order_id: id,
            carrier: "DHL".into(),
            tracking: "JD014600006281".into(),
            at: t,
        })
        .into(),
        OrderEvent::Refunded(OrderRefunded {
            order_id: id,
            amount: eur(999),
            reason: "cable returned".into(),
            at: t,
        })
        .into(),
    ]
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Vec<u8> {
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn the_samples_cover_every_event_type_once() {
    let types: Vec<&str> = samples().iter().map(Event::event_type).collect();
    let unique: BTreeSet<&str> = types.iter().copied().collect();
    assert_eq!(types.len(), unique.len(), "a type sampled twice");
    assert_eq!(unique, EVENT_TYPES.iter().copied().collect::<BTreeSet<_>>());
    for t in EVENT_TYPES {
        assert!(t.ends_with(".v1"), "{t} carries its version");
    }
}

#[test]
fn golden_bytes_of_every_event_are_unchanged() {
    let write_missing = std::env::var_os("EMPORIUM_WRITE_GOLDEN").is_some();
    let mut missing = Vec::new();
    for event in samples() {
        let path = golden_dir().join(format!("{}.hex", event.event_type()));
        let bytes = event.encode().unwrap();
        match std::fs::read_to_string(&path) {
            Ok(hex) => {
                let golden = from_hex(&hex);
                assert_eq!(
                    to_hex(&bytes),
                    to_hex(&golden),
                    "{} encodes differently than its released format: add a new version and an \
                     upcaster instead",
                    event.event_type()
                );
                assert_eq!(decode(event.event_type(), &golden).unwrap(), event);
            }
            Err(_) if write_missing => {
                std::fs::create_dir_all(golden_dir()).unwrap();
                std::fs::write(&path, to_hex(&bytes) + "\n").unwrap();
            }
            Err(_) => missing.push(path),
        }
    }
    assert!(
        missing.is_empty(),
        "missing golden files (write them with EMPORIUM_WRITE_GOLDEN=1): {missing:?}"
    );
}

#[test]
fn every_event_round_trips_through_postcard_and_json() {
    for event in samples() {
        let bytes = event.encode().unwrap();
        assert_eq!(decode(event.event_type(), &bytes).unwrap(), event);
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
    }
}

#[test]
fn events_export_as_readable_json() {
    let json = serde_json::to_value(placed(oid(7), &[("HP-1", 2, 19_999)])).unwrap();
    let placed = &json["Order"]["Placed"];
    assert_eq!(placed["order_id"], oid(7).to_string());
    assert_eq!(placed["lines"][0]["sku"], "HP-1");
    assert_eq!(placed["total"]["amount_minor"], 39_998);
    assert_eq!(placed["total"]["currency"], "EUR");
    assert_eq!(placed["at"], NOW - HOUR);
}

#[test]
fn decoding_rejects_unknown_types_trailing_bytes_and_invalid_values() {
    let event = received("HP-1", "berlin", 3);
    let mut bytes = event.encode().unwrap();
    assert!(matches!(
        decode("StockReceived.v9", &bytes),
        Err(DecodeError::UnknownType(_))
    ));
    assert!(matches!(
        decode("StockReceived.v1", &bytes[..bytes.len() - 1]),
        Err(DecodeError::Malformed { .. })
    ));
    bytes.push(0);
    assert!(matches!(
        decode("StockReceived.v1", &bytes),
        Err(DecodeError::TrailingBytes { extra: 1, .. })
    ));
    // A SKU that breaks the syntax does not decode (the value types check on deserialization).
    let bad = encode_payload("StockReceived.v1", &("bad sku", "berlin", 3u64, 0i64)).unwrap();
    assert!(matches!(
        decode("StockReceived.v1", &bad),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn checked_strings_encode_as_plain_strings_inline_or_not() {
    // Up to 24 bytes a SKU is held inline, longer ones on the heap: both are written exactly
    // as a `String` would be, in postcard and in JSON, and read back equal.
    for text in ["HP-1", &"S".repeat(24), &"L".repeat(25), &"x".repeat(64)] {
        let value = sku(text);
        let bytes = postcard::to_allocvec(&value).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(text).unwrap());
        assert_eq!(postcard::from_bytes::<Sku>(&bytes).unwrap(), value);
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<Sku>(&json).unwrap(), value);
        assert_eq!(String::from(value), text);
    }
    // An escaped JSON string is checked after unescaping; a bad one names the rule it broke.
    assert_eq!(
        serde_json::from_str::<Sku>(r#""HP\u002d1""#).unwrap(),
        sku("HP-1")
    );
    let error = serde_json::from_str::<Sku>(r#""HP 1""#).unwrap_err();
    assert!(error.to_string().contains("not a SKU"), "{error}");
    // A value of another type is refused with serde's usual words (no type name leaks).
    let error = serde_json::from_str::<Sku>("12").unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("invalid type: integer `12`, expected a string"),
        "{error}"
    );
}

// --- the upcaster seam ----------------------------------------------------------------------------

/// A hypothetical earlier version of `ProductCreated`, before tags and attributes.
#[derive(Serialize, Deserialize)]
struct ProductCreatedV0 {
    sku: Sku,
    name: String,
    description: String,
    category: CategoryPath,
    price: Money,
    at: Timestamp,
}

fn product_created_v0_to_v1(payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let old: ProductCreatedV0 = decode_payload("ProductCreated.v0", payload)?;
    let new = ProductCreated {
        sku: old.sku,
        name: old.name,
        description: old.description,
        category: old.category,
        price: old.price,
        tags: Vec::new(),
        attributes: BTreeMap::new(),
        at: old.at,
    };
    encode_payload("ProductCreated.v1", &new).map_err(|e| DecodeError::Malformed {
        event_type: "ProductCreated.v1".into(),
        source: e.source,
    })
}

const TEST_UPCASTERS: &[Upcaster] = &[Upcaster {
    from: "ProductCreated.v0",
    to: "ProductCreated.v1",
    upcast: product_created_v0_to_v1,
}];

#[test]
fn an_old_event_version_is_read_as_the_current_one() {
    let old = ProductCreatedV0 {
        sku: sku("HP-1"),
        name: "Headphones".into(),
        description: "Old".into(),
        category: "Audio".parse().unwrap(),
        price: eur(100),
        at: at(NOW),
    };
    let payload = postcard::to_allocvec(&old).unwrap();

    let event = decode_with(TEST_UPCASTERS, "ProductCreated.v0", &payload).unwrap();

    assert_eq!(event.event_type(), "ProductCreated.v1");
    let Event::Product(ProductEvent::Created(created)) = event else {
        panic!("not ProductCreated: {event:?}");
    };
    assert_eq!(created.name, "Headphones");
    assert_eq!(created.price, eur(100));
    assert!(created.tags.is_empty() && created.attributes.is_empty());
    // Without the upcaster the old type is unknown.
    assert!(matches!(
        decode("ProductCreated.v0", &payload),
        Err(DecodeError::UnknownType(_))
    ));
}

#[test]
fn a_cycle_of_upcasters_is_an_error_not_a_hang() {
    fn identity(payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(payload.to_vec())
    }
    let cycle = [
        Upcaster {
            from: "A.v1",
            to: "A.v2",
            upcast: identity,
        },
        Upcaster {
            from: "A.v2",
            to: "A.v1",
            upcast: identity,
        },
    ];
    assert!(matches!(
        decode_with(&cycle, "A.v1", &[]),
        Err(DecodeError::UpcastCycle(_))
    ));
}

// --- stream names and states ----------------------------------------------------------------------

#[test]
fn stream_names_print_and_parse_back() {
    for (stream, name) in [
        (StreamRef::Product(sku("HP-1")), "product-HP-1".to_owned()),
        (StreamRef::Stock(sku("a.b_c-D")), "stock-a.b_c-D".to_owned()),
        (StreamRef::Order(oid(7)), format!("order-{}", oid(7))),
    ] {
        assert_eq!(stream.to_string(), name);
        assert_eq!(name.parse::<StreamRef>().unwrap(), stream);
    }
    for bad in [
        "product-",
        "stock-bad sku",
        "order-nope",
        "order-0189F0E1-0000-7000-8000-000000000000",
        "cart-1",
    ] {
        assert!(bad.parse::<StreamRef>().is_err(), "{bad}");
    }
}

#[test]
fn states_snapshot_with_postcard_and_print_as_json() {
    let mut h = History::default();
    for e in samples() {
        h.record(e);
    }
    assert_eq!(STATE_SCHEMA, "emporium-domain.state.v2");
    for stream in h.streams.keys() {
        let state = h.state(stream);
        let bytes = postcard::to_allocvec(&state).unwrap();
        assert_eq!(postcard::from_bytes::<State>(&bytes).unwrap(), state);
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<State>(&json).unwrap(), state);
    }
}
