//! Recording and reporting: one HDR histogram per operation, error counts by kind, the printed
//! table and a JSON line per figure (appended to `target/load-results.jsonl`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latencies are recorded in microseconds, up to a minute, with 3 significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;
/// How many distinct error messages are kept as examples.
const ERROR_SAMPLES_MAX: usize = 8;

/// What one operation did.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The expected success, verified.
    Ok,
    /// An expected business rejection, verified (e.g. `insufficient-stock` once a flash sale has
    /// sold out): counted apart from both successes and errors.
    Rejected,
    /// Anything else: a transport error, an unexpected status, a body that fails verification.
    /// The error's kind (its class, few distinct values) and the full text of this one.
    Error(String, String),
}

#[derive(Clone, Debug)]
pub struct OpStats {
    pub latency_us: Histogram<u64>,
    pub ok: u64,
    pub rejected: u64,
}

impl OpStats {
    fn new() -> Self {
        OpStats {
            latency_us: new_histogram(),
            ok: 0,
            rejected: 0,
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants within hdrhistogram's limits.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

/// Per-worker (then merged) counts and latencies of successes, by operation.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub ops: BTreeMap<&'static str, OpStats>,
    pub errors: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
}

impl Recorder {
    pub fn record(&mut self, op: &'static str, latency: Duration, outcome: Outcome) {
        let stats = self.ops.entry(op).or_insert_with(OpStats::new);
        match outcome {
            Outcome::Ok => {
                stats.ok += 1;
                let us = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
                stats.latency_us.saturating_record(us);
            }
            Outcome::Rejected => stats.rejected += 1,
            Outcome::Error(kind, detail) => {
                *self.errors.entry(format!("{op}: {kind}")).or_default() += 1;
                self.sample_error(format!("{op}: {detail}"));
            }
        }
    }

    /// Keeps the full text of an error (the kind is its class), a few of them at most.
    pub fn sample_error(&mut self, text: String) {
        if self.error_samples.len() < ERROR_SAMPLES_MAX && !self.error_samples.contains(&text) {
            self.error_samples.push(text);
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        for (op, stats) in other.ops {
            let mine = self.ops.entry(op).or_insert_with(OpStats::new);
            mine.ok += stats.ok;
            mine.rejected += stats.rejected;
            // Same bounds on both sides: cannot fail.
            let _ = mine.latency_us.add(&stats.latency_us);
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for text in other.error_samples {
            self.sample_error(text);
        }
    }

    pub fn ok(&self) -> u64 {
        self.ops.values().map(|s| s.ok).sum()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// All operations' latencies together.
    pub fn all(&self) -> OpStats {
        let mut all = OpStats::new();
        for stats in self.ops.values() {
            all.ok += stats.ok;
            all.rejected += stats.rejected;
            let _ = all.latency_us.add(&stats.latency_us);
        }
        all
    }
}

/// Where the CPU time went during a measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// Cores used by the server process (CPU seconds / wall seconds).
    pub server_cores: Option<f64>,
    /// Cores used by the harness process (the client; for SQL peers, PostgreSQL is not in it).
    pub client_cores: f64,
}

/// One measured figure, printed and appended to the results file.
pub struct Figure {
    pub scenario: String,
    pub system: String,
    pub concurrency: usize,
    pub wall: Duration,
    pub recorder: Recorder,
    pub cpu: Cpu,
    pub rss_mib: Option<f64>,
    /// Whatever else the scenario measured (verification results, sizes).
    pub extra: Vec<(String, Value)>,
}

impl Figure {
    /// Successful operations per second over the measured window.
    pub fn rate(&self) -> f64 {
        self.recorder.ok() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn print(&self) {
        println!(
            "\n== {} | {} | concurrency {} | {:.1} s measured",
            self.scenario,
            self.system,
            self.concurrency,
            self.wall.as_secs_f64()
        );
        let mut ops: Vec<(&str, OpStats)> = self
            .recorder
            .ops
            .iter()
            .map(|(op, s)| (*op, s.clone()))
            .collect();
        if ops.len() > 1 {
            ops.push(("(all)", self.recorder.all()));
        }
        println!(
            "  {:<24} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "operation", "ok", "ok/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "rejected"
        );
        for (op, s) in &ops {
            let h = &s.latency_us;
            println!(
                "  {:<24} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9}",
                op,
                s.ok,
                s.ok as f64 / self.wall.as_secs_f64().max(1e-9),
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.95)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
                s.rejected
            );
        }
        if self.recorder.errors.is_empty() {
            println!("  errors: none");
        } else {
            println!("  errors ({} in all):", self.recorder.error_count());
            for (kind, n) in &self.recorder.errors {
                println!("    {n:>8}  {kind}");
            }
            for text in &self.recorder.error_samples {
                println!("    e.g. {text}");
            }
        }
        let mut line = format!("  cpu: client {:.2} cores", self.cpu.client_cores);
        if let Some(server) = self.cpu.server_cores {
            line.push_str(&format!(", server {server:.2} cores"));
        }
        if let Some(rss) = self.rss_mib {
            line.push_str(&format!("; server RSS {rss:.0} MiB"));
        }
        println!("{line}");
        for (key, value) in &self.extra {
            println!("  {key}: {value}");
        }
        self.append_json();
    }

    fn append_json(&self) {
        let ops: serde_json::Map<String, Value> = self
            .recorder
            .ops
            .iter()
            .map(|(op, s)| {
                let h = &s.latency_us;
                (
                    (*op).to_owned(),
                    json!({
                        "ok": s.ok,
                        "rejected": s.rejected,
                        "per_second": s.ok as f64 / self.wall.as_secs_f64().max(1e-9),
                        "p50_ms": ms(h.value_at_quantile(0.50)),
                        "p95_ms": ms(h.value_at_quantile(0.95)),
                        "p99_ms": ms(h.value_at_quantile(0.99)),
                        "max_ms": ms(h.max()),
                    }),
                )
            })
            .collect();
        let record = json!({
            "scenario": self.scenario,
            "system": self.system,
            "concurrency": self.concurrency,
            "seconds": self.wall.as_secs_f64(),
            "per_second": self.rate(),
            "ops": ops,
            "errors": self.recorder.errors,
            "client_cores": self.cpu.client_cores,
            "server_cores": self.cpu.server_cores,
            "rss_mib": self.rss_mib,
            "extra": self.extra.iter().cloned().collect::<serde_json::Map<String, Value>>(),
            "loadavg": loadavg(),
        });
        append_result(&record);
    }
}

/// When this harness process started (Unix seconds): every line it appends carries it as `run`,
/// so that `report` can tell which figures were measured in the same run.
pub fn run_id() -> u64 {
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *RUN.get_or_init(unix_now)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Appends one JSON line to `target/load-results.jsonl` (best effort: a failure is printed).
/// Every line gets `unix_time` (when it was written) and `run` (see [`run_id`]) if it has none.
pub fn append_result(record: &Value) {
    let mut record = record.clone();
    if let Some(map) = record.as_object_mut() {
        map.entry("unix_time").or_insert_with(|| json!(unix_now()));
        map.entry("run").or_insert_with(|| json!(run_id()));
    }
    let record = &record;
    let path = results_path();
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{record}"));
    if let Err(e) = written {
        eprintln!("load: cannot append to {}: {e}", path.display());
    }
}

pub fn results_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("load-results.jsonl")
}

/// Prints (and records) a ratio between two figures.
pub fn ratio(scenario: &str, what: &str, ours: f64, theirs: f64, target: &str) {
    let r = ours / theirs.max(1e-9);
    println!(
        "\n>> {scenario}: {what}: Emporium {ours:.1} vs peer {theirs:.1} = {r:.2}x (target {target})"
    );
    append_result(&json!({
        "scenario": scenario,
        "ratio": what,
        "emporium": ours,
        "peer": theirs,
        "x": r,
        "target": target,
        "loadavg": loadavg(),
    }));
}

/// Prints (and records) how many times lower our latency is than the peer's.
pub fn latency_ratio(scenario: &str, what: &str, ours_us: u64, theirs_us: u64, target: &str) {
    let r = theirs_us as f64 / (ours_us as f64).max(1.0);
    println!(
        "\n>> {scenario}: {what}: Emporium {:.2} vs peer {:.2} = {r:.2}x lower (target {target})",
        ms(ours_us),
        ms(theirs_us)
    );
    append_result(&json!({
        "scenario": scenario,
        "ratio": what,
        "emporium_ms": ms(ours_us),
        "peer_ms": ms(theirs_us),
        "x": r,
        "target": target,
        "loadavg": loadavg(),
    }));
}

pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The 1-minute load average, as `/proc/loadavg` says.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields are counted after its closing ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks: 100 per second on Linux (USER_HZ).
    Some((utime + stime) / 100.0)
}

/// A field of `/proc/<pid>/status` in MiB (`VmRSS`, `VmHWM`).
pub fn status_mib(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
