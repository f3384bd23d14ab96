//! Running the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `emporium` binary with a clean environment (no `EMPORIUM_*` from the caller).
pub fn emporium(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_emporium"));
    for (key, _) in std::env::vars() {
        if key.starts_with("EMPORIUM_") {
            command.env_remove(key);
        }
    }
    command.arg("--data-dir").arg(data_dir);
    command
}

pub fn run(data_dir: &Path, args: &[&str]) -> Output {
    emporium(data_dir).args(args).output().unwrap()
}

/// Runs and expects success; returns stdout.
pub fn ok(data_dir: &Path, args: &[&str]) -> String {
    let output = run(data_dir, args);
    assert!(
        output.status.success(),
        "emporium {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub struct Seeded {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
}

/// A small demo store, seeded once per test binary and copied for each test that changes it.
pub fn seeded() -> &'static Seeded {
    static SEEDED: OnceLock<Seeded> = OnceLock::new();
    SEEDED.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let out = ok(
            &dir,
            &[
                "demo",
                "seed",
                "--products",
                "120",
                "--orders",
                "300",
                "--warehouses",
                "3",
                "--seed",
                "11",
                "--concurrency",
                "32",
            ],
        );
        assert!(out.contains("Seeded 120 products"), "{out}");
        Seeded { _dir: tmp, dir }
    })
}

/// A private copy of the seeded store.
pub fn seeded_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("data");
    copy_dir(&seeded().dir, &to);
    (tmp, to)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

/// Every event of the seeded store as JSON (from `events export --format jsonl`).
pub fn all_events(dir: &Path) -> Vec<serde_json::Value> {
    ok(dir, &["events", "export", "--format", "jsonl"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
