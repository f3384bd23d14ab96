//! The system under test: the release `emporium` binary in its own process (so that its CPU and
//! memory are measured apart from the client's), on 127.0.0.1, a port the kernel picks, and a
//! fresh data directory; on PostgreSQL, a fresh database that is dropped afterwards.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::client::Conn;
use crate::report::status_mib;

/// Which event store the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Store {
    Embedded,
    Postgres,
}

impl Store {
    pub fn name(self) -> &'static str {
        match self {
            Store::Embedded => "embedded",
            Store::Postgres => "postgres",
        }
    }
}

/// The `emporium` binary: built in release mode once (cargo only checks when it is up to date),
/// unless `EMPORIUM_BIN` names one.
pub fn emporium_bin(build: bool) -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("EMPORIUM_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join("target").join("release").join("emporium");
    if build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        eprintln!("load: cargo build --release -p emporium");
        let status = std::process::Command::new(cargo)
            .args(["build", "--release", "-p", "emporium", "--bin", "emporium"])
            .current_dir(root)
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release -p emporium failed");
        }
    }
    if !bin.exists() {
        bail!(
            "{} does not exist (build it, or set EMPORIUM_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A fresh PostgreSQL database, dropped by [`PgDb::drop_db`].
pub struct PgDb {
    pub base: String,
    pub name: String,
}

impl PgDb {
    pub async fn create(base: &str, label: &str) -> anyhow::Result<PgDb> {
        let name = format!(
            "emporium_load_{label}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() % 1_000_000_000)
        );
        let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
            .await
            .with_context(|| format!("connecting to {base}/postgres"))?;
        // The name is ours: letters, digits and underscores.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        Ok(PgDb {
            base: base.to_owned(),
            name,
        })
    }

    pub fn url(&self) -> String {
        format!("{}/{}", self.base, self.name)
    }

    pub async fn drop_db(self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", self.base)).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

/// A running server.
pub struct Server {
    child: Child,
    pub pid: String,
    pub addr: SocketAddr,
    /// The bootstrap key and [`API_KEYS`] more: the clients take them in turn, so that the
    /// per-key rate limit (10,000 requests/s by default) is not what is measured.
    pub keys: Vec<String>,
    next_key: std::sync::atomic::AtomicUsize,
    pub store: Store,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// From spawning the process to `GET /ready` answering 200.
    pub started_in: Duration,
}

/// API keys created for a run besides the bootstrap key.
pub const API_KEYS: usize = 8;

/// Creates `n` keys with every scope through `emporium keys create --json` (before the server
/// starts: the embedded API store is locked by a running server).
fn create_keys(bin: &Path, data_dir: &Path, database_url: Option<&str>, n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..n {
        let output = cli(bin, data_dir, database_url)
            .args(["keys", "create", "--name", &format!("load-{i}")])
            .args(["--scopes", "commands,read,events,admin", "--json"])
            .output();
        let secret = output.ok().filter(|o| o.status.success()).and_then(|o| {
            let json: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            json["secret"].as_str().map(str::to_owned)
        });
        match secret {
            Some(secret) => keys.push(secret),
            None => {
                eprintln!("load: `emporium keys create` failed; using the bootstrap key only");
                break;
            }
        }
    }
    keys
}

/// The key every run uses (`EMPORIUM_BOOTSTRAP_KEY`): every scope.
pub const LOAD_KEY: &str = "emp_load-harness_0123456789abcdef0123456789abcdef0123456789";

impl Server {
    /// Starts `emporium serve` on `data_dir` (and `database_url`), and waits until it is ready.
    pub async fn start(
        bin: &Path,
        store: Store,
        data_dir: &Path,
        database_url: Option<&str>,
    ) -> anyhow::Result<Server> {
        std::fs::create_dir_all(data_dir)?;
        if let Some(url) = database_url {
            // The schema first, so that keys can be created before the server starts.
            let _ = cli(bin, data_dir, Some(url)).arg("migrate").output();
        }
        let mut keys = vec![LOAD_KEY.to_owned()];
        keys.extend(create_keys(bin, data_dir, database_url, API_KEYS));
        let t0 = Instant::now();
        let mut command = Command::new(bin);
        command.arg("--data-dir").arg(data_dir);
        if let Some(url) = database_url {
            command.arg("--database-url").arg(url);
        }
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("EMPORIUM_BOOTSTRAP_KEY", LOAD_KEY)
            // Request logs would cost the server as much as the requests: warnings only.
            .env(
                "RUST_LOG",
                std::env::var("EMPORIUM_LOAD_RUST_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child.id().map(|p| p.to_string()).unwrap_or_default();
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr: SocketAddr = loop {
            let line = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
                .await
                .context("the server did not say where it listens within 10 minutes")??;
            let Some(line) = line else {
                bail!("the server exited before listening");
            };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr
                    .parse()
                    .with_context(|| format!("address in {line:?}"))?;
            }
        };
        // Keep draining stdout so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let mut conn = Conn::new(addr, LOAD_KEY)?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            match conn.get("/ready").await {
                Ok(r) if r.status == 200 => break,
                _ if Instant::now() > deadline => bail!("the server is not ready after 10 min"),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        Ok(Server {
            child,
            pid,
            addr,
            keys,
            next_key: std::sync::atomic::AtomicUsize::new(0),
            store,
            data_dir: data_dir.to_owned(),
            database_url: database_url.map(str::to_owned),
            started_in: t0.elapsed(),
        })
    }

    pub fn conn(&self) -> anyhow::Result<Conn> {
        let i = self
            .next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Conn::new(self.addr, &self.keys[i % self.keys.len()])
    }

    pub fn rss_mib(&self) -> Option<f64> {
        status_mib(&self.pid, "VmRSS")
    }

    pub fn peak_rss_mib(&self) -> Option<f64> {
        status_mib(&self.pid, "VmHWM")
    }

    /// SIGTERM (graceful: in-flight requests finish, the stores close), then waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid])
            .status();
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                eprintln!("load: the server did not stop within 60 s; killing it");
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// `emporium --data-dir DIR [--database-url URL]`, for CLI subcommands.
pub fn cli(bin: &Path, data_dir: &Path, database_url: Option<&str>) -> std::process::Command {
    let mut command = std::process::Command::new(bin);
    command.arg("--data-dir").arg(data_dir);
    if let Some(url) = database_url {
        command.arg("--database-url").arg(url);
    }
    command
}
