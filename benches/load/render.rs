//! `cargo bench --bench load -- report [--since RFC3339]`: turns `target/load-results.jsonl` into
//! the markdown tables of BENCHMARKS.md's "Results" section, so that a quiet re-run becomes the
//! document by pasting, with nothing copied by hand.
//!
//! For each scenario it takes the latest run (the `run` field: when the harness process started;
//! lines written before that field existed count as one old run) and, within it, the latest line
//! per system. Ratios are the ones the scenario printed in that run (peers measured in the same
//! command). Every row carries the load average recorded with it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

/// Scenario families, in the document's order: (key, how the scenario label starts).
const FAMILIES: [(&str, &str); 8] = [
    ("orders", "PlaceOrder 3 lines"),
    ("flash", "flash sale"),
    ("mixed", "mixed "),
    ("freshness", "freshness"),
    ("search", "search, "),
    ("growth", "growth: "),
    ("large", "large: "),
    // Seeding rates, shown under the orders table.
    ("seed", "seed "),
];

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)` (RFC 3339) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> anyhow::Result<u64> {
    let bad = || format!("--since {s}: expected RFC 3339, e.g. 2026-11-24T19:05:00Z");
    let (date, time) = s.split_once(['T', 't', ' ']).with_context(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()
        .with_context(bad)?;
    let [year, month, day] = d[..] else {
        bail!(bad())
    };
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-']).with_context(bad)?;
        let (c, o) = time.split_at(at);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (h, m) = o[1..].split_once(':').with_context(bad)?;
        let minutes = h.parse::<i64>().ok().with_context(bad)? * 60
            + m.parse::<i64>().ok().with_context(bad)?;
        (c, sign * minutes * 60)
    };
    let clock = clock.split('.').next().unwrap_or(clock);
    let t: Vec<i64> = clock
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()
        .with_context(bad)?;
    let [hour, minute, second] = t[..] else {
        bail!(bad())
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        bail!(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs).ok().with_context(bad)
}

/// Reads the results file and prints the tables.
pub fn print_report(path: &Path, since: Option<u64>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (run a scenario first)", path.display()))?;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) => lines.push(v),
            Err(e) => eprintln!("report: {}:{}: skipped: {e}", path.display(), n + 1),
        }
    }
    print!("{}", render(&lines, since));
    Ok(())
}

/// The markdown for `lines` (the results file's JSON lines, in file order).
pub fn render(lines: &[Value], since: Option<u64>) -> String {
    // family -> scenario label -> run -> lines (in file order)
    let mut by_family: BTreeMap<&str, BTreeMap<String, BTreeMap<u64, Vec<&Value>>>> =
        BTreeMap::new();
    for v in lines {
        if let Some(since) = since
            && v["unix_time"].as_u64().is_none_or(|t| t < since)
        {
            continue;
        }
        let Some(scenario) = v["scenario"].as_str() else {
            continue;
        };
        let Some((family, _)) = FAMILIES.iter().find(|(_, p)| scenario.starts_with(p)) else {
            continue;
        };
        by_family
            .entry(family)
            .or_default()
            .entry(scenario.to_owned())
            .or_default()
            .entry(v["run"].as_u64().unwrap_or(0))
            .or_default()
            .push(v);
    }
    let mut out = String::new();
    let empty = BTreeMap::new();
    let family = |key: &str| by_family.get(key).unwrap_or(&empty);
    let since_note = since.map_or(String::new(), |t| format!(" written since Unix time {t}"));
    out.push_str(&format!(
        "<!-- cargo bench --bench load -- report: the latest run of each scenario{since_note} -->\n"
    ));
    for (scenario, runs) in family("orders") {
        orders(&mut out, scenario, latest(runs), family("seed"));
    }
    flash(&mut out, family("flash"));
    for (scenario, runs) in family("mixed") {
        mixed(&mut out, scenario, latest(runs));
    }
    for (scenario, runs) in family("freshness") {
        freshness(&mut out, scenario, latest(runs));
    }
    for (scenario, runs) in family("search") {
        search(&mut out, scenario, latest(runs));
    }
    for (scenario, runs) in family("growth") {
        growth(&mut out, scenario, latest(runs));
    }
    for (scenario, runs) in family("large") {
        large(&mut out, scenario, latest(runs));
    }
    if by_family.is_empty() {
        out.push_str("\n(no results in the file for this period)\n");
    }
    out
}

/// The lines of the latest run.
fn latest<'a>(runs: &BTreeMap<u64, Vec<&'a Value>>) -> Vec<&'a Value> {
    runs.values().next_back().cloned().unwrap_or_default()
}

/// Figure lines (they have `ops`), the latest per system, in first-seen order.
fn figures<'a>(lines: &[&'a Value]) -> Vec<&'a Value> {
    let mut order: Vec<String> = Vec::new();
    let mut last: BTreeMap<String, &Value> = BTreeMap::new();
    for v in lines.iter().filter(|v| v.get("ops").is_some()) {
        let key = format!("{}|{}", v["system"], v["concurrency"]);
        if !order.contains(&key) {
            order.push(key.clone());
        }
        last.insert(key, v);
    }
    order.iter().filter_map(|k| last.get(k).copied()).collect()
}

fn ratios(out: &mut String, lines: &[&Value]) {
    let rs: Vec<String> = lines
        .iter()
        .filter(|v| v.get("ratio").is_some())
        .map(|v| {
            format!(
                "{} **{:.2}x** (target {}, load {})",
                v["ratio"].as_str().unwrap_or("?"),
                v["x"].as_f64().unwrap_or(0.0),
                v["target"].as_str().unwrap_or("?"),
                v["loadavg"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if !rs.is_empty() {
        out.push_str(&format!("\nRatios (same run): {}.\n", rs.join("; ")));
    }
}

fn system_name(system: &str) -> String {
    system
        .replace("emporium/embedded", "Emporium, embedded")
        .replace("emporium/postgres", "Emporium, PostgreSQL store")
}

fn loadavg(v: &Value) -> String {
    v["loadavg"].as_str().unwrap_or("?").to_owned()
}

/// A rate with thousands separators.
fn rate(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds with three significant digits (at most 1 decimal above 100).
fn ms(x: Option<f64>) -> String {
    match x {
        None => "—".to_owned(),
        Some(x) if x >= 100.0 => rate(x),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn op<'a>(v: &'a Value, name: &str) -> &'a Value {
    &v["ops"][name]
}

/// The operation of a one-operation figure (or `place_order`).
fn main_op(v: &Value) -> &Value {
    match v["ops"].as_object() {
        Some(ops) if ops.len() == 1 => ops.values().next().unwrap_or(&Value::Null),
        _ => op(v, "place_order"),
    }
}

fn errors(v: &Value) -> u64 {
    v["errors"]
        .as_object()
        .map_or(0, |e| e.values().filter_map(Value::as_u64).sum())
}

fn rss(v: &Value) -> String {
    v["rss_mib"]
        .as_f64()
        .map_or("—".to_owned(), |r| format!("{r:.0} MiB"))
}

fn cores(v: &Value, key: &str) -> String {
    v[key]
        .as_f64()
        .map_or("—".to_owned(), |c| format!("{c:.2}"))
}

fn orders(
    out: &mut String,
    scenario: &str,
    lines: Vec<&Value>,
    seeds: &BTreeMap<String, BTreeMap<u64, Vec<&Value>>>,
) {
    out.push_str(&format!("\n### {scenario} (`orders`)\n\n"));
    out.push_str("| system | orders/s | p50 ms | p95 ms | p99 ms | max ms | errors | CPU server / client (cores) | server RSS | load |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for v in figures(&lines) {
        let o = main_op(v);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            system_name(v["system"].as_str().unwrap_or("?")),
            rate(v["per_second"].as_f64().unwrap_or(0.0)),
            ms(o["p50_ms"].as_f64()),
            ms(o["p95_ms"].as_f64()),
            ms(o["p99_ms"].as_f64()),
            ms(o["max_ms"].as_f64()),
            errors(v),
            cores(v, "server_cores"),
            cores(v, "client_cores"),
            rss(v),
            loadavg(v)
        ));
    }
    ratios(out, &lines);
    // Seeding rates of the same run.
    // Lines written before `run` existed cannot be told apart: no seeding rates for them.
    let Some(run) = lines.first().and_then(|v| v["run"].as_u64()) else {
        return;
    };
    let rates: Vec<String> = seeds
        .iter()
        .flat_map(|(label, runs)| {
            runs.get(&run)
                .into_iter()
                .flatten()
                .map(move |v| (label, v))
        })
        .map(|(label, v)| {
            format!(
                "{label} on {}: {}/s",
                v["system"].as_str().unwrap_or("?"),
                rate(v["per_second"].as_f64().unwrap_or(0.0))
            )
        })
        .collect();
    if !rates.is_empty() {
        out.push_str(&format!("Seeding in the same run: {}.\n", rates.join("; ")));
    }
}

fn flash(out: &mut String, scenarios: &BTreeMap<String, BTreeMap<u64, Vec<&Value>>>) {
    if scenarios.is_empty() {
        return;
    }
    out.push_str("\n### Flash sale (`flash1`, `flash10`)\n\n");
    out.push_str("| scenario | system | orders/s | p50 ms | p95 ms | p99 ms | max ms | oversold | log = acknowledged | load |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let mut all_ratios = Vec::new();
    for (scenario, runs) in scenarios {
        let lines = latest(runs);
        for v in figures(&lines) {
            let o = main_op(v);
            let x = &v["extra"];
            let sold: u64 = x["units sold (acknowledged) per hot SKU"]
                .as_array()
                .map_or(0, |a| a.iter().filter_map(Value::as_u64).sum());
            let left: Option<u64> = x["units left per hot SKU (log)"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).sum());
            let mut orders_s = rate(v["per_second"].as_f64().unwrap_or(0.0));
            if left == Some(0) && sold > 0 {
                orders_s.push_str(&format!(
                    " (sold out: {} units in {:.1} s)",
                    rate(sold as f64),
                    v["seconds"].as_f64().unwrap_or(0.0)
                ));
            }
            let oversold = x
                .get("oversold units (log)")
                .or_else(|| x.get("oversold units"))
                .map_or("?".to_owned(), Value::to_string);
            let consistent = x
                .get("log reserved == acknowledged")
                .or_else(|| x.get("reserved + left == received"))
                .and_then(Value::as_bool)
                .map_or("?", |b| if b { "yes" } else { "**no**" });
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                scenario,
                system_name(v["system"].as_str().unwrap_or("?")),
                orders_s,
                ms(o["p50_ms"].as_f64()),
                ms(o["p95_ms"].as_f64()),
                ms(o["p99_ms"].as_f64()),
                ms(o["max_ms"].as_f64()),
                oversold,
                consistent,
                loadavg(v)
            ));
        }
        all_ratios.extend(lines.into_iter().filter(|v| v.get("ratio").is_some()));
    }
    ratios(out, &all_ratios);
}

fn p50_p99(o: &Value) -> String {
    format!(
        "{} / {}",
        ms(o["p50_ms"].as_f64()),
        ms(o["p99_ms"].as_f64())
    )
}

fn mixed(out: &mut String, scenario: &str, lines: Vec<&Value>) {
    out.push_str(&format!("\n### {scenario} (`mixed`)\n\n"));
    out.push_str("| system | requests/s | product p50/p99 ms | stock p50/p99 ms | search p50/p99 ms | order p50/p99 ms | errors | server CPU | load |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for v in figures(&lines) {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            system_name(v["system"].as_str().unwrap_or("?")),
            rate(v["per_second"].as_f64().unwrap_or(0.0)),
            p50_p99(op(v, "get_product")),
            p50_p99(op(v, "get_stock")),
            p50_p99(op(v, "search")),
            p50_p99(op(v, "place_order")),
            errors(v),
            cores(v, "server_cores"),
            loadavg(v)
        ));
    }
}

fn freshness(out: &mut String, scenario: &str, lines: Vec<&Value>) {
    out.push_str(&format!("\n### {scenario} (`freshness`)\n\n"));
    out.push_str("Delay from the write's answer to the first `GET /v1/search` (no `min_position`) that shows it.\n\n");
    out.push_str("| system | price change visible p50 / p99 / max ms | sold out visible p50 / p99 / max ms | trials (each) | not visible / errors | orders/s meanwhile | order p50/p99 ms | load |\n");
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    let figs = figures(&lines);
    for v in figs
        .iter()
        .filter(|v| v["extra"]["role"].as_str() == Some("freshness"))
    {
        let traffic = figs.iter().find(|t| {
            t["extra"]["role"].as_str() == Some("traffic")
                && t["system"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(v["system"].as_str().unwrap_or("?")))
        });
        let three = |o: &Value| {
            format!(
                "{} / {} / {}",
                ms(o["p50_ms"].as_f64()),
                ms(o["p99_ms"].as_f64()),
                ms(o["max_ms"].as_f64())
            )
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            system_name(v["system"].as_str().unwrap_or("?")),
            three(op(v, "price change visible")),
            three(op(v, "sold out visible")),
            v["extra"]["trials per kind"],
            errors(v),
            rate(v["extra"]["orders/s meanwhile"].as_f64().unwrap_or(0.0)),
            traffic.map_or("—".to_owned(), |t| p50_p99(op(t, "place_order"))),
            loadavg(v)
        ));
    }
}

fn search(out: &mut String, scenario: &str, lines: Vec<&Value>) {
    out.push_str(&format!("\n### {scenario} (`search`)\n\n"));
    let figs = figures(&lines);
    let one: Vec<&&Value> = figs.iter().filter(|v| v["concurrency"] == 1).collect();
    if !one.is_empty() {
        let mut header = "| query |".to_owned();
        let mut rule = "|---|".to_owned();
        for v in &one {
            header.push_str(&format!(
                " {} p50 / p95 / p99 ms (1 client) |",
                system_name(v["system"].as_str().unwrap_or("?"))
            ));
            rule.push_str("---|");
        }
        out.push_str(&format!("{header}\n{rule}\n"));
        let queries: Vec<String> = one[0]["ops"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for q in queries {
            let mut row = format!("| {q} |");
            for v in &one {
                let o = op(v, &q);
                row.push_str(&format!(
                    " {} / {} / {} |",
                    ms(o["p50_ms"].as_f64()),
                    ms(o["p95_ms"].as_f64()),
                    ms(o["p99_ms"].as_f64())
                ));
            }
            out.push_str(&row);
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str("| system | clients | searches/s | p50 ms (all queries) | p95 ms | p99 ms | no-hit answers | server CPU | load |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for v in &figs {
        // All queries together: the percentiles of the figure are per query; use the worst p95
        // and p99 and the median of p50s is not the same thing, so merge by weighting is not
        // possible from percentiles; the JSON keeps per-query values, the row shows their range.
        let ops: Vec<&Value> = v["ops"]
            .as_object()
            .map(|o| o.values().collect())
            .unwrap_or_default();
        let range = |key: &str| {
            let xs: Vec<f64> = ops.iter().filter_map(|o| o[key].as_f64()).collect();
            let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = xs.iter().copied().fold(0.0, f64::max);
            if xs.is_empty() {
                "—".to_owned()
            } else {
                format!("{}–{}", ms(Some(lo)), ms(Some(hi)))
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            system_name(v["system"].as_str().unwrap_or("?")),
            v["concurrency"],
            rate(v["per_second"].as_f64().unwrap_or(0.0)),
            range("p50_ms"),
            range("p95_ms"),
            range("p99_ms"),
            v["extra"]["answers with no hit"],
            cores(v, "server_cores"),
            loadavg(v)
        ));
    }
    ratios(out, &lines);
}

/// Summary lines (no `ops`), the latest per system.
fn summaries<'a>(lines: &[&'a Value]) -> Vec<&'a Value> {
    let mut last: BTreeMap<String, &Value> = BTreeMap::new();
    for v in lines
        .iter()
        .filter(|v| v.get("ops").is_none() && v.get("ratio").is_none())
    {
        last.insert(v["system"].as_str().unwrap_or("?").to_owned(), v);
    }
    last.into_values().collect()
}

fn growth(out: &mut String, scenario: &str, lines: Vec<&Value>) {
    out.push_str(&format!("\n### {scenario} (`growth-stream`)\n\n"));
    out.push_str("| system | stream events | p50 ms | p99 ms | server RSS | load |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for s in summaries(&lines) {
        let system = system_name(s["system"].as_str().unwrap_or("?"));
        for row in s["rows (events, p50 us, p99 us, rss MiB)"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let us = |i: usize| row[i].as_f64().map(|x| x / 1e3);
            out.push_str(&format!(
                "| {system} | {} | {} | {} | {} | {} |\n",
                rate(row[0].as_f64().unwrap_or(0.0)),
                ms(us(1)),
                ms(us(2)),
                row[3]
                    .as_f64()
                    .map_or("—".to_owned(), |r| format!("{r:.0} MiB")),
                loadavg(s)
            ));
        }
        out.push_str(&format!(
            "| {system} | restart: ready {:.2} s / first command on the long stream {} ms / second {} ms | | | {} | {} |\n",
            s["restart: ready in (s)"].as_f64().unwrap_or(0.0),
            ms(s["restart: first command on the long stream (ms)"].as_f64()),
            ms(s["restart: second command (ms)"].as_f64()),
            s["restart: rss MiB"]
                .as_f64()
                .map_or("—".to_owned(), |r| format!("{r:.0} MiB")),
            loadavg(s)
        ));
    }
}

fn large(out: &mut String, scenario: &str, lines: Vec<&Value>) {
    out.push_str(&format!("\n### {scenario} (`large`)\n\n"));
    out.push_str(
        "| system | log events | PlaceOrder orders/s | p50 ms | p99 ms | server RSS | load |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|\n");
    for v in figures(&lines) {
        let o = main_op(v);
        let system = v["system"].as_str().unwrap_or("?");
        let (name, at) = system.split_once(" @ ").unwrap_or((system, "?"));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            system_name(name),
            at.trim_end_matches(" events")
                .parse::<f64>()
                .map_or_else(|_| at.to_owned(), rate),
            rate(v["per_second"].as_f64().unwrap_or(0.0)),
            ms(o["p50_ms"].as_f64()),
            ms(o["p99_ms"].as_f64()),
            rss(v),
            loadavg(v)
        ));
    }
    for s in summaries(&lines) {
        out.push_str(&format!(
            "\n| {} | |\n|---|---|\n",
            system_name(s["system"].as_str().unwrap_or("?"))
        ));
        let mut kv = |k: &str, v: String| out.push_str(&format!("| {k} | {v} |\n"));
        kv("products", s["products"].to_string());
        kv("log events", rate(s["log events"].as_f64().unwrap_or(0.0)));
        kv(
            "seeding through the API",
            format!("{:.0} s", s["seed (s)"].as_f64().unwrap_or(0.0)),
        );
        kv(
            "data directory",
            format!("{} MiB", s["data dir (MiB)"].as_str().unwrap_or("?")),
        );
        kv(
            "peak RSS while filling",
            format!(
                "{:.0} MiB",
                s["peak RSS while filling (MiB)"].as_f64().unwrap_or(0.0)
            ),
        );
        kv(
            "restart: ready in / RSS when ready / RSS 5 s later",
            format!(
                "{:.2} s / {:.0} MiB / {:.0} MiB",
                s["restart: ready in (s)"].as_f64().unwrap_or(0.0),
                s["restart: RSS when ready (MiB)"].as_f64().unwrap_or(0.0),
                s["restart: RSS 5 s later (MiB)"].as_f64().unwrap_or(0.0)
            ),
        );
        for c in s["cli"].as_array().into_iter().flatten() {
            kv(
                &format!("`{}`", c["command"].as_str().unwrap_or("?")),
                if c["ok"].as_bool() == Some(true) {
                    let products = c["products_per_s"]
                        .as_f64()
                        .map(|p| format!(", {} products/s", rate(p)))
                        .unwrap_or_default();
                    format!(
                        "**{} events/s**{products} ({:.1} s)",
                        rate(c["events_per_s"].as_f64().unwrap_or(0.0)),
                        c["seconds"].as_f64().unwrap_or(0.0)
                    )
                } else {
                    "FAILED".to_owned()
                },
            );
        }
        for (label, h) in s["as-of over HTTP"].as_object().into_iter().flatten() {
            kv(
                &format!(
                    "`GET /v1/streams/{{stream}}?as_of_version=`, {label} stream ({} events, as of {})",
                    h["stream events"], h["as_of_version"]
                ),
                format!(
                    "p50 {} ms, p99 {} ms, max {} ms",
                    ms(h["p50_ms"].as_f64()),
                    ms(h["p99_ms"].as_f64()),
                    ms(h["max_ms"].as_f64())
                ),
            );
        }
        for (label, c) in s["as-of with emporium replay"]
            .as_object()
            .into_iter()
            .flatten()
        {
            kv(
                &format!("`emporium replay --as-of-version`, {label} stream (whole command)"),
                format!(
                    "best {} ms, median {} ms",
                    ms(c["best_ms"].as_f64()),
                    ms(c["median_ms"].as_f64())
                ),
            );
        }
        kv("load", loadavg(s));
    }
}
