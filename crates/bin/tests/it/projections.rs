use crate::support::{ok, run, seeded_copy};

#[test]
fn projections_are_rebuilt_offline_into_a_new_generation() {
    let (_tmp, dir) = seeded_copy();
    let status: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["projections", "status", "--json"])).unwrap();
    let names: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["catalog", "stock", "orders", "search"]);

    let out = ok(&dir, &["projections", "rebuild", "--all"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("Rebuilt ")).count(),
        4,
        "{out}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["projections", "status", "--json"])).unwrap();
    for s in status.as_array().unwrap() {
        assert_eq!(s["generation"], 2, "{s}");
        assert_eq!(s["position"], s["head"], "{s}");
    }
    let table = ok(&dir, &["projections", "status"]);
    assert!(table.starts_with("NAME"), "{table}");

    let output = run(&dir, &["projections", "rebuild", "nope"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("no projection named"), "{stderr}");
}
