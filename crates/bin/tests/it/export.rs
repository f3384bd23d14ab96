use std::fs::File;

use arrow_array::{Array, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::support::{all_events, ok, seeded};

#[test]
fn jsonl_has_every_event_in_position_order_with_envelope_and_payload() {
    let events = all_events(&seeded().dir);
    assert!(events.len() > 1000, "{}", events.len());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["position"], i as u64 + 1);
        assert!(e["payload"].is_object(), "{e}");
        assert!(e["event_id"].as_str().unwrap().len() == 36);
    }
    let first = &events[0];
    assert_eq!(first["event_type"], "ProductCreated.v1");
    assert_eq!(first["recorded_at"], "2025-08-01T00:00:00.000000Z");
    assert!(
        first["metadata"]["command_id"]
            .as_str()
            .unwrap()
            .starts_with("demo-11-")
    );
    let types: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    for t in [
        "ProductCreated.v1",
        "StockReceived.v1",
        "OrderPlaced.v1",
        "StockReserved.v1",
        "PaymentCaptured.v1",
        "OrderShipped.v1",
        "StockShipped.v1",
        "OrderCancelled.v1",
        "OrderExpired.v1",
        "ReservationReleased.v1",
        "OrderRefunded.v1",
    ] {
        assert!(types.contains(t), "no {t} in the demo history: {types:?}");
    }
}

#[test]
fn filters_select_by_position_stream_type_and_time() {
    let dir = &seeded().dir;
    let all = all_events(dir);
    let out = ok(
        dir,
        &[
            "events", "export", "--format", "jsonl", "--from", "10", "--to", "19",
        ],
    );
    assert_eq!(out.lines().count(), 10);
    let out = ok(
        dir,
        &[
            "events",
            "export",
            "--format",
            "jsonl",
            "--stream",
            "order-",
            "--type",
            "OrderPlaced.v1",
            "--type",
            "OrderExpired.v1",
        ],
    );
    let expected = all
        .iter()
        .filter(|e| {
            ["OrderPlaced.v1", "OrderExpired.v1"].contains(&e["event_type"].as_str().unwrap())
        })
        .count();
    assert_eq!(out.lines().count(), expected);
    let since = "2025-10-01T00:00:00Z";
    let out = ok(
        dir,
        &["events", "export", "--format", "jsonl", "--since", since],
    );
    let expected = all
        .iter()
        .filter(|e| e["recorded_at"].as_str().unwrap() >= "2025-10-01T00:00:00.000000Z")
        .count();
    assert_eq!(out.lines().count(), expected);
    assert!(expected > 0 && expected < all.len());
}

#[test]
fn csv_has_a_header_flattened_columns_and_the_payload_as_json() {
    let dir = &seeded().dir;
    let all = all_events(dir);
    let out = ok(dir, &["events", "export", "--format", "csv"]);
    let mut lines = out.split("\r\n").filter(|l| !l.is_empty());
    let header = lines.next().unwrap();
    assert!(header.starts_with("position,stream,version,event_id,event_type,recorded_at,"));
    assert!(header.contains(",sku,order_id,warehouse,quantity,amount_minor,currency,payload,"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), all.len());
    // The first row: a product with its price flattened.
    let first = rows[0];
    assert!(first.starts_with("1,product-"), "{first}");
    assert!(first.contains(",USD,\"{\"\"sku\"\":"), "{first}");
}

#[test]
fn parquet_is_typed_and_holds_every_event() {
    let dir = &seeded().dir;
    let all = all_events(dir);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.parquet");
    ok(
        dir,
        &[
            "events",
            "export",
            "--format",
            "parquet",
            "--output",
            path.to_str().unwrap(),
        ],
    );
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
    assert_eq!(
        reader.metadata().file_metadata().num_rows() as usize,
        all.len()
    );
    let schema = reader.schema().clone();
    assert_eq!(
        schema.field_with_name("position").unwrap().data_type(),
        &DataType::UInt64
    );
    assert_eq!(
        schema.field_with_name("version").unwrap().data_type(),
        &DataType::UInt64
    );
    assert_eq!(
        schema.field_with_name("recorded_at").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(
        schema.field_with_name("amount_minor").unwrap().data_type(),
        &DataType::Int64
    );
    assert_eq!(
        schema.field_with_name("payload").unwrap().data_type(),
        &DataType::Utf8
    );
    let mut rows = 0;
    for batch in reader.build().unwrap() {
        let batch = batch.unwrap();
        let positions = batch
            .column_by_name("position")
            .unwrap()
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap();
        let types = batch
            .column_by_name("event_type")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let times = batch
            .column_by_name("recorded_at")
            .unwrap()
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        let payloads = batch
            .column_by_name("payload")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        for i in 0..batch.num_rows() {
            let expected = &all[rows + i];
            assert_eq!(positions.value(i), expected["position"].as_u64().unwrap());
            assert_eq!(types.value(i), expected["event_type"].as_str().unwrap());
            let payload: serde_json::Value = serde_json::from_str(payloads.value(i)).unwrap();
            assert_eq!(payload, expected["payload"]);
            assert!(times.is_valid(i));
        }
        rows += batch.num_rows();
    }
    assert_eq!(rows, all.len());
    assert_eq!(
        1754006400000000,
        all[0]["payload"]["at"].as_i64().unwrap(),
        "the history starts on 2025-08-01"
    );
}
