use serde_json::Value;

use crate::support::{all_events, ok, run, seeded};

#[test]
fn a_stream_is_replayed_as_of_a_version_and_as_of_a_time() {
    let dir = &seeded().dir;
    let events = all_events(dir);
    let reserved = events
        .iter()
        .find(|e| e["event_type"] == "StockReserved.v1")
        .unwrap();
    let stream = reserved["stream"].as_str().unwrap();
    let version = reserved["version"].as_u64().unwrap();
    let order_id = reserved["payload"]["order_id"].as_str().unwrap();

    let at = |args: &[&str]| -> Value {
        let mut all = vec!["replay", stream];
        all.extend_from_slice(args);
        serde_json::from_str(&ok(dir, &all)).unwrap()
    };
    let before = at(&["--as-of-version", &(version - 1).to_string()]);
    assert_eq!(before["version"], version - 1);
    assert!(
        before["state"]["Stock"]["reservations"]
            .get(order_id)
            .is_none()
    );
    let after = at(&["--as-of-version", &version.to_string()]);
    assert_eq!(after["version"], version);
    assert!(
        after["state"]["Stock"]["reservations"]
            .get(order_id)
            .is_some()
    );

    let time = reserved["recorded_at"].as_str().unwrap();
    let then = at(&["--as-of", time]);
    assert!(then["version"].as_u64().unwrap() >= version);
    let last_before = events
        .iter()
        .filter(|e| e["stream"] == stream && e["recorded_at"].as_str().unwrap() <= time)
        .map(|e| e["version"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(then["version"], last_before);

    let latest = at(&[]);
    assert_eq!(latest["version"], latest["current_version"]);
}

#[test]
fn a_bad_stream_or_version_is_one_clear_error() {
    let dir = &seeded().dir;
    for (args, says) in [
        (vec!["replay", "nonsense"], "not a domain stream name"),
        (vec!["replay", "stock-NOPE"], "has no events"),
        (
            vec!["replay", "stock-NOPE", "--as-of", "yesterday"],
            "--as-of",
        ),
    ] {
        let output = run(dir, &args);
        assert!(!output.status.success());
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.starts_with("emporium: "), "{stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn a_time_before_the_first_event_is_the_initial_state_and_timings_are_on_stderr() {
    let dir = &seeded().dir;
    let events = all_events(dir);
    let first = &events[0];
    let stream = first["stream"].as_str().unwrap();
    let output = run(
        dir,
        &[
            "replay",
            stream,
            "--as-of",
            "2000-01-01T00:00:00Z",
            "--timings",
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let replayed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(replayed["version"], Value::Null, "{replayed}");
    assert_eq!(
        replayed["current_version"],
        events.iter().filter(|e| e["stream"] == stream).count() as u64 - 1
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("opened the event store in "), "{stderr}");
    assert!(stderr.contains("; replayed in "), "{stderr}");
}
