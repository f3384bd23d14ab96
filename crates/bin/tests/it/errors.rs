use crate::support::run;

#[test]
fn commands_on_a_missing_store_fail_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing-here");
    for args in [
        vec!["events", "export", "--format", "jsonl"],
        vec!["replay", "stock-SKU-1"],
        vec!["verify"],
        vec!["events", "tail"],
    ] {
        let output = run(&missing, &args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.starts_with("emporium: no event store in"),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(!missing.exists(), "{args:?} created the directory");
    }
}

#[test]
fn bad_flags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(
        tmp.path(),
        &[
            "events",
            "export",
            "--format",
            "jsonl",
            "--since",
            "last tuesday",
        ],
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("emporium: --since:"), "{stderr}");
}
