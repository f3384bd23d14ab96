use crate::support::{ok, run, seeded, seeded_copy};

#[test]
fn a_good_store_verifies() {
    let out = ok(&seeded().dir, &["verify"]);
    assert!(out.contains("ok    frame checksums"), "{out}");
    assert!(out.contains("ok    domain invariants"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&seeded().dir, &["verify", "--json"])).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["findings_total"], 0);
}

#[test]
fn a_flipped_byte_mid_log_is_reported_with_file_and_offset() {
    let (_tmp, dir) = seeded_copy();
    let segment = std::fs::read_dir(dir.join("eventlog/log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&segment, bytes).unwrap();

    let output = run(&dir, &["verify", "--json"]);
    assert!(!output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let finding = &report["findings"][0];
    assert_eq!(finding["kind"], "damaged-frame");
    assert_eq!(finding["file"], segment.display().to_string());
    let offset = finding["offset"].as_u64().unwrap();
    assert!(
        offset <= at as u64 && at as u64 - offset < 64 * 1024,
        "{finding}"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("emporium: verify found"), "{stderr}");
    assert!(
        stderr.contains(&format!("at byte offset {offset}")),
        "{stderr}"
    );

    // The text report names them too, and the other commands refuse clearly.
    let output = run(&dir, &["verify"]);
    let out = String::from_utf8(output.stdout).unwrap();
    assert!(out.contains("FAIL  frame checksums: 1"), "{out}");
    let output = run(&dir, &["replay", "stock-ELE-0000001"]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success());
    assert!(stderr.contains("corrupt event log"), "{stderr}");
}
