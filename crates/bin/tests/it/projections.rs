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

    // A named set is rebuilt together (one read of the log); the others stay as they are.
    let out = ok(
        &dir,
        &["projections", "rebuild", "stock", "orders", "stock"],
    );
    let rebuilt: Vec<&str> = out.lines().filter(|l| l.starts_with("Rebuilt ")).collect();
    assert_eq!(rebuilt.len(), 2, "{out}");
    assert!(out.contains("The 2 rebuilds, run together"), "{out}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["projections", "status", "--json"])).unwrap();
    for s in status.as_array().unwrap() {
        let expected = if matches!(s["name"].as_str(), Some("stock" | "orders")) {
            3
        } else {
            2
        };
        assert_eq!(s["generation"], expected, "{s}");
        assert_eq!(s["position"], s["head"], "{s}");
    }

    let output = run(&dir, &["projections", "rebuild", "nope"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("no projection named"), "{stderr}");
}

/// `emporium projections rebuild <name> --server <base> --api-key <key>`.
fn rebuild_on_server(
    dir: &std::path::Path,
    name: &str,
    base: &str,
    key: &str,
) -> std::process::Output {
    let name_args: &[&str] = if name == "--all" { &["--all"] } else { &[name] };
    let mut args = vec!["projections", "rebuild"];
    args.extend_from_slice(name_args);
    args.extend_from_slice(&["--server", base, "--api-key", key]);
    crate::support::run(dir, &args)
}

/// The SKUs and total of a search answer (what must not change while a rebuild runs).
fn search_outcome(body: &serde_json::Value) -> (Vec<String>, u64) {
    let skus = body["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|h| h["sku"].as_str().unwrap().to_owned())
        .collect();
    (skus, body["total"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_are_rebuilt_online_while_queries_keep_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (server, base, key, head) = crate::serve::demo_server(&dir);
    let client = reqwest::Client::new();

    let products: serde_json::Value = client
        .get(format!("{base}/v1/products?limit=1"))
        .bearer_auth(&key)
        .header("Emporium-Min-Position", head.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product = products["items"][0].clone();
    let sku = product["sku"].as_str().unwrap().to_owned();
    let word = product["name"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_lowercase();
    let search = {
        let (base, key, word) = (base.clone(), key.clone(), word.clone());
        move |client: reqwest::Client| {
            let url = format!("{base}/v1/search?q={word}");
            let key = key.clone();
            async move {
                let response = client
                    .get(url)
                    .bearer_auth(&key)
                    .header("Emporium-Min-Position", head.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                response.json::<serde_json::Value>().await.unwrap()
            }
        }
    };
    let expected_search = search_outcome(&search(client.clone()).await);
    assert!(expected_search.0.contains(&sku), "{expected_search:?}");

    // A client that keeps querying until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (client, base, key, sku, stop) = (
            client.clone(),
            base.clone(),
            key.clone(),
            sku.clone(),
            stop.clone(),
        );
        let expected_search = expected_search.clone();
        let search = search.clone();
        tokio::spawn(async move {
            let mut queries = 0u64;
            loop {
                let response = client
                    .get(format!("{base}/v1/products/{sku}"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body, product);
                let found = search(client.clone()).await;
                assert_eq!(search_outcome(&found), expected_search, "{found}");
                queries += 2;
                if stop.load(std::sync::atomic::Ordering::SeqCst) && queries >= 20 {
                    return queries;
                }
            }
        })
    };

    let rebuild = {
        let (dir, base, key) = (dir.clone(), base.clone(), key.clone());
        tokio::task::spawn_blocking(move || rebuild_on_server(&dir, "--all", &base, &key))
            .await
            .unwrap()
    };
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let stdout = String::from_utf8_lossy(&rebuild.stdout);
    assert!(
        rebuild.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    // Not a terminal: no progress bar on stderr.
    assert!(rebuild.stderr.is_empty(), "{rebuild:?}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("Rebuilt ")).count(),
        4,
        "{stdout}"
    );
    let queries = reader.await.unwrap();
    assert!(queries >= 20);

    let status: serde_json::Value = client
        .get(format!("{base}/v1/admin/projections"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let projections = status["projections"].as_array().unwrap();
    assert_eq!(projections.len(), 4, "{status}");
    for p in projections {
        assert_eq!(p["generation"], 2, "{p}");
        assert_eq!(p["rebuild"]["phase"], "swapped", "{p}");
        assert_eq!(p["rebuild"]["generation"], 2, "{p}");
    }

    // An unknown projection: 404 listing the valid names; the CLI says so in one line.
    let unknown = client
        .post(format!("{base}/v1/admin/projections/nope/rebuild"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let problem: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(
        problem["valid_names"],
        serde_json::json!(["catalog", "stock", "orders", "search", "all"]),
        "{problem}"
    );
    let output = rebuild_on_server(&dir, "nope", &base, &key);
    assert!(!output.status.success());
    // A wrong key: a one-line error naming the server's answer.
    let output = rebuild_on_server(&dir, "search", &base, "emp_nope_nope");
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("401"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    crate::serve::stop(server);
}
