//! `emporium serve --demo`: the README's first command, run for real.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Stdio};

use crate::support::emporium;

/// Reads stdout lines until one contains `needle`; returns it.
pub fn line_with(lines: &mut Lines<BufReader<ChildStdout>>, needle: &str) -> String {
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains(needle) {
            return line;
        }
    }
    panic!("the server's output ended before a line with {needle:?}");
}

/// The server process; killed if the test fails before stopping it.
pub struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn start(dir: &std::path::Path) -> (Server, Lines<BufReader<ChildStdout>>) {
    let mut child = emporium(dir)
        .args([
            "serve",
            "--demo",
            "--demo-products",
            "60",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (Server(Some(child)), lines)
}

/// SIGTERM, then the graceful shutdown must end the process successfully.
pub fn stop(mut server: Server) {
    let mut child = server.0.take().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

/// Starts `serve --demo` on a fresh directory; returns the server, its URL, its admin key and
/// the store's head after the seed.
pub fn demo_server(dir: &std::path::Path) -> (Server, String, String, u64) {
    let (server, mut lines) = start(dir);
    // "--demo: 60 products, 120 orders placed, 933 events in 0.3 s."
    let seeded = line_with(&mut lines, "--demo: 60 products");
    let head: u64 = seeded
        .split(" events in")
        .next()
        .and_then(|before| before.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {seeded:?}"));
    let listening = line_with(&mut lines, "Emporium listening on ");
    let base = listening
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    let key = line_with(&mut lines, "emp_").trim().to_owned();
    // The rest of the output is not read; keep the pipe drained so that the server never blocks.
    std::thread::spawn(move || lines.for_each(drop));
    (server, base, key, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_seeds_an_empty_store_once_and_answers_searches() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (child, base, key, head) = demo_server(&dir);

    let client = reqwest::Client::new();
    let get = |path: String| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(&key)
            .header("Emporium-Min-Position", head.to_string())
            .send()
    };
    let products: serde_json::Value = get("/v1/products?limit=5".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = &products["items"][0];
    let name = first["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{products}"));
    let word = name.split_whitespace().nth(1).unwrap().to_lowercase();
    let search = get(format!("/v1/search?q={word}")).await.unwrap();
    assert_eq!(search.status(), 200);
    let search: serde_json::Value = search.json().await.unwrap();
    assert!(search["total"].as_u64().unwrap() >= 1, "{search}");
    let hits = search["hits"].as_array().unwrap();
    assert!(hits.iter().all(|h| {
        h["name"].as_str().unwrap().to_lowercase().contains(&word)
            || h["highlights"]["description"].is_object()
    }));
    stop(child);

    // A second start keeps the data and does not seed again.
    let (child, mut lines) = start(&dir);
    line_with(&mut lines, "--demo: the store already holds");
    line_with(&mut lines, "Emporium listening on ");
    stop(child);
}
