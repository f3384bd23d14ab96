//! The closed loop: `concurrency` workers, each with one operation in flight, for a warm-up then a
//! measured window. Only operations that *start* inside the window are recorded.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::report::{Cpu, Outcome, Recorder, cpu_seconds};

/// A simulated client.
pub trait Worker: Send + 'static {
    /// Runs one operation; `None` when this worker has nothing more to do.
    fn step(&mut self) -> impl Future<Output = Option<(&'static str, Outcome)>> + Send;
}

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub warmup: Duration,
    /// The longest the measured window lasts (a worker may finish sooner).
    pub duration: Duration,
}

pub struct Measured {
    pub recorder: Recorder,
    /// From the start of the window to its end, or to when the last worker finished.
    pub wall: Duration,
    pub cpu: Cpu,
}

/// Runs `workers` until the window closes, `stop` is set, or every worker is done.
pub async fn closed_loop<W: Worker>(
    workers: Vec<W>,
    plan: Plan,
    server_pid: Option<&str>,
    stop: Arc<AtomicBool>,
) -> Measured {
    let started = Instant::now();
    let window_start = started + plan.warmup;
    let window_end = window_start + plan.duration;
    let mut tasks = Vec::with_capacity(workers.len());
    for mut worker in workers {
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut recorder = Recorder::default();
            loop {
                let t0 = Instant::now();
                if t0 >= window_end || stop.load(Ordering::Relaxed) {
                    break;
                }
                let Some((op, outcome)) = worker.step().await else {
                    break;
                };
                if t0 >= window_start {
                    recorder.record(op, t0.elapsed(), outcome);
                }
            }
            (recorder, Instant::now())
        }));
    }

    // CPU counters at the start of the window.
    tokio::time::sleep_until(window_start.into()).await;
    let client_cpu0 = cpu_seconds("self").unwrap_or(0.0);
    let server_cpu0 = server_pid.and_then(cpu_seconds);
    let cpu_t0 = Instant::now();

    let mut recorder = Recorder::default();
    let mut last = window_start;
    let mut server_cpu1 = None;
    let mut client_cpu1 = None;
    let mut cpu_t1 = None;
    for task in tasks {
        match task.await {
            Ok((r, finished)) => {
                recorder.merge(r);
                last = last.max(finished);
            }
            Err(e) => recorder.sample_error(format!("worker panicked: {e}")),
        }
        if cpu_t1.is_none() && Instant::now() >= window_end {
            cpu_t1 = Some(Instant::now());
            client_cpu1 = cpu_seconds("self");
            server_cpu1 = server_pid.and_then(cpu_seconds);
        }
    }
    let cpu_t1 = cpu_t1.unwrap_or_else(Instant::now);
    let client_cpu1 = client_cpu1.or_else(|| cpu_seconds("self")).unwrap_or(0.0);
    let server_cpu1 = server_cpu1.or_else(|| server_pid.and_then(cpu_seconds));
    let cpu_wall = cpu_t1.duration_since(cpu_t0).as_secs_f64().max(1e-9);
    let cpu = Cpu {
        client_cores: (client_cpu1 - client_cpu0) / cpu_wall,
        server_cores: match (server_cpu0, server_cpu1) {
            (Some(a), Some(b)) => Some((b - a) / cpu_wall),
            _ => None,
        },
    };
    Measured {
        recorder,
        wall: last.min(window_end).saturating_duration_since(window_start),
        cpu,
    }
}

/// A small, fast, deterministic generator (SplitMix64): the same seed gives the same traffic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// `k` distinct values of `0..n`, sorted.
    pub fn distinct(&mut self, k: usize, n: u64) -> Vec<u64> {
        let mut picked = Vec::with_capacity(k);
        while picked.len() < k {
            let v = self.below(n);
            if !picked.contains(&v) {
                picked.push(v);
            }
        }
        picked.sort_unstable();
        picked
    }
}
