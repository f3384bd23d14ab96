use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::{emporium, seeded_copy};

#[test]
fn tail_prints_one_json_line_per_event_and_follows() {
    let (_tmp, dir) = seeded_copy();
    let mut child = emporium(&dir)
        .args(["events", "tail", "--after", "0", "--type", "OrderPlaced.v1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        let line = lines.next().unwrap().unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["event_type"], "OrderPlaced.v1");
    }
    // Still running: it follows the log rather than exiting at its end.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}
