use crate::support::{ok, run};

#[test]
fn keys_are_created_listed_and_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let created: serde_json::Value = serde_json::from_str(&ok(
        dir,
        &[
            "keys",
            "create",
            "--name",
            "storefront",
            "--scopes",
            "commands,read",
            "--json",
        ],
    ))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with(&format!("emp_{id}_")));
    assert_eq!(created["scopes"], serde_json::json!(["commands", "read"]));

    let text = ok(
        dir,
        &["keys", "create", "--name", "ops", "--scopes", "admin"],
    );
    assert!(text.contains("shown only this once"), "{text}");

    let listed: serde_json::Value =
        serde_json::from_str(&ok(dir, &["keys", "list", "--json"])).unwrap();
    let keys = listed.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.get("secret").is_none()));
    assert!(ok(dir, &["keys", "list"]).contains("storefront"));

    ok(dir, &["keys", "revoke", &id]);
    let listed: serde_json::Value =
        serde_json::from_str(&ok(dir, &["keys", "list", "--json"])).unwrap();
    let revoked = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap();
    assert!(revoked["revoked_at"].is_string());

    let output = run(dir, &["keys", "revoke", "nope"]);
    assert!(!output.status.success());
    let output = run(
        dir,
        &["keys", "create", "--name", "x", "--scopes", "everything"],
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("emporium: --scopes: unknown scope"),
        "{stderr}"
    );
}

#[test]
fn migrate_without_a_database_url_says_what_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(tmp.path(), &["migrate"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--database-url"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1);
}
