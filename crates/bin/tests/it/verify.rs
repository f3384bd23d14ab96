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
    // Damage a stock stream's frame in the middle of the log (its name is stored in the frame:
    // `stock-` + a 11-character SKU such as `ELE-0000001`), so that replaying that stream must
    // read the damaged frame.
    let at = bytes.len() / 2
        + bytes[bytes.len() / 2..]
            .windows(6)
            .position(|w| w == b"stock-")
            .unwrap();
    let damaged_stream = String::from_utf8(bytes[at..at + 17].to_vec()).unwrap();
    // The frame stores the event's version right after the stream name (u64, little endian).
    let damaged_version = u64::from_le_bytes(bytes[at + 17..at + 25].try_into().unwrap());
    bytes[at + 2] ^= 0x40;
    let at = at + 2;
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
    // `replay` reads (and checks) only the frames it folds (the latest state may come from a
    // snapshot taken after the damaged frame): as of the damaged version, that frame is read.
    let version = damaged_version.to_string();
    let output = run(
        &dir,
        &["replay", &damaged_stream, "--as-of-version", &version],
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        !output.status.success(),
        "replay {damaged_stream} answered: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.contains("corrupt event log"), "{stderr}");
}

/// A seeded copy whose projections exist and have folded the whole log (`projections status`
/// alone opens them but may close before the runners have caught up: they read ahead).
fn with_projections() -> (tempfile::TempDir, std::path::PathBuf) {
    let (tmp, dir) = seeded_copy();
    ok(&dir, &["projections", "rebuild", "--all"]);
    (tmp, dir)
}

#[test]
fn projections_are_compared_with_a_fresh_fold() {
    let (_tmp, dir) = with_projections();
    let out = ok(&dir, &["verify"]);
    assert!(
        out.contains("ok    projections match a fresh fold"),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&dir, &["verify", "--json"])).unwrap();
    assert_eq!(json["projections"], "ok", "{json}");

    // Without projections, the comparison is skipped (and says so).
    let (_tmp, bare) = seeded_copy();
    std::fs::remove_dir_all(bare.join("projections")).ok();
    let out = ok(&bare, &["verify"]);
    assert!(
        out.contains("projections: skipped (no projections)"),
        "{out}"
    );
}

#[test]
fn a_projection_row_that_no_fold_produces_is_reported() {
    use emporium_domain::product::{ProductDiscontinued, ProductEvent};
    use emporium_domain::{Event, ProductStatus, Sku, Timestamp};
    use emporium_projections::{Catalog, ModelConfig, ReadModel};

    let (_tmp, dir) = with_projections();
    // Written through the storage API: one product discontinued that the log keeps active.
    let slot = dir.join("projections/catalog");
    let generation = std::fs::read_to_string(slot.join("CURRENT")).unwrap();
    let catalog = Catalog::open(&slot.join(generation.trim()), &ModelConfig::default()).unwrap();
    let sku = catalog
        .all()
        .unwrap()
        .into_iter()
        .find(|row| row.status == ProductStatus::Active)
        .unwrap()
        .sku;
    let event = Event::Product(ProductEvent::Discontinued(ProductDiscontinued {
        sku: Sku::parse(&sku).unwrap(),
        at: Timestamp::from_micros(1_800_000_000_000_000),
    }));
    let position = catalog.checkpoint().unwrap() + 1;
    catalog
        .apply(&[emporium_eventstore::RecordedEvent {
            position,
            stream: format!("product-{sku}"),
            version: 1_000,
            event_id: uuid::Uuid::from_u128(7),
            event_type: event.event_type().to_owned(),
            payload: event.encode().unwrap().into(),
            metadata: Default::default(),
        }])
        .unwrap();
    catalog.flush().unwrap();
    drop(catalog);

    let output = run(&dir, &["verify", "--json"]);
    assert!(!output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["projections"], "differs", "{report}");
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["kind"], "projection");
    let message = findings[0]["message"].as_str().unwrap();
    assert!(message.starts_with("catalog: 1 row differs"), "{message}");
    assert!(message.contains(&sku), "{message}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("catalog: 1 row differs"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn a_projection_file_that_does_not_open_is_reported() {
    let (_tmp, dir) = with_projections();
    let slot = dir.join("projections/stock");
    let generation = std::fs::read_to_string(slot.join("CURRENT")).unwrap();
    for entry in std::fs::read_dir(slot.join(generation.trim())).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, vec![0xA5; 4096]).unwrap();
        }
    }
    let output = run(&dir, &["verify"]);
    assert!(!output.status.success());
    let out = String::from_utf8(output.stdout).unwrap();
    assert!(
        out.contains("FAIL  projections match a fresh fold: 1"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "stock: generation {} does not open",
            generation.trim()
        )),
        "{out}"
    );
}

/// Every file under `dir` with its bytes (the `LOCK` file of a store a command held is not data).
fn contents(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn verify_replay_and_export_leave_the_data_directory_byte_identical() {
    let (_tmp, dir) = with_projections();
    // More events after the projections' checkpoints: opening the projections in place would
    // apply them (and write the read models and checkpoints).
    let out = ok(
        &dir,
        &[
            "demo",
            "seed",
            "--products",
            "130",
            "--orders",
            "300",
            "--warehouses",
            "3",
            "--seed",
            "11",
        ],
    );
    assert!(out.contains("Seeded 130 products"), "{out}");
    let before = contents(&dir);

    let out = ok(&dir, &["verify"]);
    assert!(
        out.contains("ok    projections match a fresh fold"),
        "{out}"
    );
    let stream = crate::support::all_events(&dir)
        .iter()
        .rev()
        .find(|e| e["event_type"] == "StockReceived.v1")
        .map(|e| e["stream"].as_str().unwrap().to_owned())
        .unwrap();
    ok(
        &dir,
        &["replay", &stream, "--as-of", "2030-01-01T00:00:00Z"],
    );
    // Parquet on stdout is not text: only its success is checked here.
    let export = run(
        &dir,
        &["events", "export", "--format", "parquet", "--output", "-"],
    );
    assert!(export.status.success());

    let after = contents(&dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "files were added or removed"
    );
    for (path, bytes) in &before {
        assert!(after[path] == *bytes, "{} changed", path.display());
    }
}
