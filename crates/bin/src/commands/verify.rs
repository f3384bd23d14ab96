//! `emporium verify`: the log's frames and numbering, and the domain's invariants over the whole
//! history.
//!
//! - **Frames** (embedded store): every frame's checksum, read with `scan_log`, which lists every
//!   damaged frame (file and byte offset) and keeps going, where opening the store stops at the
//!   first.
//! - **Numbering**: positions strictly increasing; each stream's versions gap-free from 0.
//! - **Events**: every event decodes, into an event of the stream it is in.
//! - **Invariants**, folded over the log: in every warehouse `0 <= reserved <= on_hand` (no
//!   shipment, release, transfer or count takes more than there is), a reservation is made once
//!   and released or shipped once, a product is created once before anything else happens to it,
//!   an order follows its state machine and never refunds more than it captured.
//!
//! - **Projections**, when the data directory has them: each read model compared with a fresh
//!   fold of the log (`verify_projections`); skipped when the log itself has findings.
//!
//! Strictly read-only: verify writes nothing in the data directory. The log is scanned with
//! `scan_log` and opened with `open_read_only` (no lock, no truncated tail, no index file). The
//! projections are brought to the head before the comparison (opening them lets their runners
//! apply what they have not yet applied), so they are compared as a copy in a temporary
//! directory (`TMPDIR`): the data directory's own read models, checkpoints and `CURRENT`
//! pointers stay as they were, and a server that has them open is not disturbed.
//!
//! Exits non-zero (one line on stderr) after printing the report when anything is found.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::Context;
use emporium_domain::order::OrderEvent;
use emporium_domain::product::ProductEvent;
use emporium_domain::stock::{self, StockEvent};
use emporium_domain::{
    Event, OrderAction, OrderId, OrderStatus, ProductStatus, StockState, StreamRef, next_status,
};
use emporium_eventstore::{EventRef, ReadFilter, ScanOptions, ScanReport};
use serde::Serialize;

use super::{open_event_store, open_event_store_read_only, progress, require_log};
use crate::cli::{StoreArgs, VerifyArgs};

/// Findings described in full; beyond this they are only counted.
const FINDINGS_SHOWN_MAX: usize = 1000;
const PAGE_EVENTS: usize = 8192;

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// `damaged-frame`, `position`, `version`, `decode`, `wrong-stream`, `invariant`,
    /// `projection`.
    pub kind: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub ok: bool,
    pub store: String,
    pub segments: Option<usize>,
    pub frames: Option<u64>,
    pub bytes: Option<u64>,
    pub events: u64,
    pub streams: u64,
    pub last_position: u64,
    /// A torn write at the end of the log (truncated at the next open; not a finding).
    pub torn_tail: Option<String>,
    /// `ok`, `differs`, or why the comparison was skipped.
    pub projections: String,
    pub findings_total: u64,
    pub findings: Vec<Finding>,
}

#[derive(Default)]
struct OrderTrack {
    status: Option<OrderStatus>,
    captured_minor: i64,
    refunded_minor: i64,
}

/// Folds the log and collects what breaks a rule.
#[derive(Default)]
struct Checker {
    last_position: u64,
    events: u64,
    /// The next version of each stream.
    versions: HashMap<String, u64>,
    products: HashMap<String, ProductStatus>,
    stock: HashMap<String, StockState>,
    orders: HashMap<OrderId, OrderTrack>,
    findings: Vec<Finding>,
    findings_total: u64,
}

impl Checker {
    fn find(&mut self, kind: &'static str, position: Option<u64>, message: String) {
        self.findings_total += 1;
        if self.findings.len() < FINDINGS_SHOWN_MAX {
            self.findings.push(Finding {
                kind,
                message,
                file: None,
                offset: None,
                position,
            });
        }
    }

    fn event(&mut self, e: &EventRef<'_>) {
        self.events += 1;
        let at = Some(e.position);
        if e.position <= self.last_position {
            self.find(
                "position",
                at,
                format!(
                    "position {} follows position {}: positions must strictly increase",
                    e.position, self.last_position
                ),
            );
        }
        self.last_position = self.last_position.max(e.position);
        let next = self.versions.entry(e.stream.to_owned()).or_insert(0);
        let expected = *next;
        *next = e.version + 1;
        if e.version != expected {
            self.find(
                "version",
                at,
                format!(
                    "stream {} has version {} at position {}, expected {expected} (versions are \
                     gap-free from 0)",
                    e.stream, e.version, e.position
                ),
            );
        }
        let event = match emporium_domain::decode(e.event_type, e.payload) {
            Ok(event) => event,
            Err(error) => {
                self.find(
                    "decode",
                    at,
                    format!(
                        "event {} of {} ({}) at position {} does not decode: {error}",
                        e.version, e.stream, e.event_type, e.position
                    ),
                );
                return;
            }
        };
        let stream = event.stream();
        if stream.to_string() != e.stream {
            self.find(
                "wrong-stream",
                at,
                format!(
                    "{} at position {} belongs to {stream} but is in stream {}",
                    e.event_type, e.position, e.stream
                ),
            );
            return;
        }
        match (&stream, &event) {
            (StreamRef::Product(sku), Event::Product(event)) => {
                self.product(sku.as_str(), event, e.position)
            }
            (StreamRef::Stock(sku), Event::Stock(event)) => {
                self.stock(sku.as_str(), event, e.position)
            }
            (StreamRef::Order(id), Event::Order(event)) => self.order(*id, event, e.position),
            _ => {}
        }
    }

    fn product(&mut self, sku: &str, event: &ProductEvent, position: u64) {
        let at = Some(position);
        let status = self.products.get(sku).copied();
        match (event, status) {
            (ProductEvent::Created(_), None) => {
                self.products.insert(sku.to_owned(), ProductStatus::Active);
            }
            (ProductEvent::Created(_), Some(_)) => self.find(
                "invariant",
                at,
                format!("product {sku} is created a second time at position {position}"),
            ),
            (_, None) => self.find(
                "invariant",
                at,
                format!("product {sku} changes at position {position} before it is created"),
            ),
            (ProductEvent::Discontinued(_), Some(ProductStatus::Discontinued)) => self.find(
                "invariant",
                at,
                format!("product {sku} is discontinued twice (position {position})"),
            ),
            (ProductEvent::PriceChanged(_), Some(ProductStatus::Discontinued)) => self.find(
                "invariant",
                at,
                format!("discontinued product {sku} changes price at position {position}"),
            ),
            (ProductEvent::Discontinued(_), Some(_)) => {
                self.products
                    .insert(sku.to_owned(), ProductStatus::Discontinued);
            }
            _ => {}
        }
    }

    fn stock(&mut self, sku: &str, event: &StockEvent, position: u64) {
        let state = self.stock.remove(sku).unwrap_or_default();
        let mut problems = Vec::new();
        let warehouse = |id: &emporium_domain::WarehouseId| state.warehouse(id);
        match event {
            StockEvent::Received(_) => {}
            StockEvent::Adjusted(e) => {
                let w = warehouse(&e.warehouse);
                if e.previous != w.on_hand {
                    problems.push(format!(
                        "a count in {} says {} were on hand, the history says {}",
                        e.warehouse, e.previous, w.on_hand
                    ));
                }
                if e.counted < w.reserved {
                    problems.push(format!(
                        "a count of {} in {} is below the {} reserved there",
                        e.counted, e.warehouse, w.reserved
                    ));
                }
            }
            StockEvent::Transferred(e) => {
                let available = warehouse(&e.from).available();
                if e.quantity > available {
                    problems.push(format!(
                        "a transfer of {} from {} exceeds the {available} available there",
                        e.quantity, e.from
                    ));
                }
            }
            StockEvent::Reserved(e) => {
                if state.reservations.contains_key(&e.order_id) {
                    problems.push(format!("order {} is reserved twice", e.order_id.0));
                }
                for a in &e.allocations {
                    let available = warehouse(&a.warehouse).available();
                    if a.quantity > available {
                        problems.push(format!(
                            "reserving {} in {} for order {} exceeds the {available} available",
                            a.quantity, a.warehouse, e.order_id.0
                        ));
                    }
                }
            }
            StockEvent::ReservationReleased(e) => match state.reservations.get(&e.order_id) {
                None => problems.push(format!(
                    "the reservation of order {} is released but is not live (released \
                         twice, shipped, or never made)",
                    e.order_id.0
                )),
                Some(r) if r.allocations != e.allocations => problems.push(format!(
                    "the release of order {}'s reservation gives back other allocations than \
                         were reserved",
                    e.order_id.0
                )),
                Some(_) => {}
            },
            StockEvent::Shipped(e) => match state.reservations.get(&e.order_id) {
                None => problems.push(format!(
                    "order {} ships stock that is not reserved for it (released, shipped \
                     twice, or never reserved)",
                    e.order_id.0
                )),
                Some(r) if r.allocations != e.allocations => problems.push(format!(
                    "order {} ships other allocations than were reserved",
                    e.order_id.0
                )),
                Some(_) => {}
            },
        }
        let state = stock::evolve(state, event);
        for (id, w) in &state.warehouses {
            if w.reserved > w.on_hand {
                problems.push(format!(
                    "warehouse {id} has {} reserved of {} on hand",
                    w.reserved, w.on_hand
                ));
            }
        }
        for problem in problems {
            self.find(
                "invariant",
                Some(position),
                format!("stock-{sku} at position {position}: {problem}"),
            );
        }
        self.stock.insert(sku.to_owned(), state);
    }

    fn order(&mut self, id: OrderId, event: &OrderEvent, position: u64) {
        let track = self.orders.entry(id).or_default();
        let mut problems = Vec::new();
        let action = match event {
            OrderEvent::Placed(_) => None,
            OrderEvent::PaymentAuthorized(_) => Some(OrderAction::AuthorizePayment),
            OrderEvent::PaymentCaptured(_) => Some(OrderAction::CapturePayment),
            OrderEvent::PaymentFailed(_) => Some(OrderAction::FailPayment),
            OrderEvent::Cancelled(_) => Some(OrderAction::Cancel),
            OrderEvent::Expired(_) => Some(OrderAction::Expire),
            OrderEvent::Shipped(_) => Some(OrderAction::Ship),
            OrderEvent::Refunded(_) => Some(OrderAction::Refund),
        };
        match (action, track.status) {
            (None, None) => track.status = Some(OrderStatus::Placed),
            (None, Some(_)) => problems.push("it is placed a second time".to_owned()),
            (Some(action), None) => {
                problems.push(format!("{} before it was placed", action.as_str()))
            }
            (Some(action), Some(from)) => match next_status(from, action) {
                Some(to) => track.status = Some(to),
                None => problems.push(format!(
                    "{} is not allowed from status {}",
                    action.as_str(),
                    from.as_str()
                )),
            },
        }
        match event {
            OrderEvent::PaymentCaptured(e) => {
                track.captured_minor = track.captured_minor.saturating_add(e.amount.amount_minor)
            }
            OrderEvent::Refunded(e) => {
                track.refunded_minor = track.refunded_minor.saturating_add(e.amount.amount_minor);
                if track.refunded_minor > track.captured_minor {
                    problems.push(format!(
                        "refunds of {} exceed the {} captured (minor units)",
                        track.refunded_minor, track.captured_minor
                    ));
                }
            }
            _ => {}
        }
        for problem in problems {
            self.find(
                "invariant",
                Some(position),
                format!("order-{} at position {position}: {problem}", id.0),
            );
        }
    }
}

pub async fn run(store_args: &StoreArgs, args: VerifyArgs) -> anyhow::Result<()> {
    let mut checker = Checker::default();
    let mut report = Report::default();
    let bar = progress(None, "events");
    if store_args.database_url.is_some() {
        report.store = "PostgreSQL".to_owned();
        let store = open_event_store(store_args, false).await?;
        let shared = store.shared();
        let mut after = 0;
        loop {
            let page = shared
                .read_all(after, &ReadFilter::default(), PAGE_EVENTS)
                .await
                .context("reading the event log")?;
            let Some(last) = page.last() else { break };
            after = last.position;
            for recorded in &page {
                checker.event(&recorded.event_ref());
            }
            bar.set_position(checker.events);
        }
        store.close().await;
    } else {
        require_log(&store_args.data_dir)?;
        let dir = super::event_store_dir(&store_args.data_dir);
        report.store = dir.display().to_string();
        let bar_in_scan = bar.clone();
        let (scan, returned) = tokio::task::spawn_blocking(move || {
            let mut checker = checker;
            let scan = emporium_eventstore::scan_log(&dir, ScanOptions::default(), |event| {
                checker.event(event);
                if checker.events.is_multiple_of(65_536) {
                    bar_in_scan.set_position(checker.events);
                }
                ControlFlow::Continue(())
            });
            (scan, checker)
        })
        .await
        .context("the verify task failed")?;
        checker = returned;
        let scan: ScanReport = scan.context("reading the event log")?;
        report.segments = Some(scan.segments);
        report.frames = Some(scan.frames);
        report.bytes = Some(scan.bytes);
        report.torn_tail = scan.torn_tail.map(|t| {
            format!(
                "{} at byte offset {}: {} (the next open truncates it)",
                t.file.display(),
                t.offset,
                t.reason
            )
        });
        let mut damaged: Vec<Finding> = scan
            .bad_frames
            .into_iter()
            .map(|bad| Finding {
                kind: "damaged-frame",
                message: format!(
                    "damaged frame in {} at byte offset {}: {}",
                    bad.file.display(),
                    bad.offset,
                    bad.reason
                ),
                file: Some(bad.file.display().to_string()),
                offset: Some(bad.offset),
                position: None,
            })
            .collect();
        checker.findings_total += damaged.len() as u64;
        damaged.append(&mut checker.findings);
        checker.findings = damaged;
    }
    bar.finish_and_clear();
    report.projections = if checker.findings_total > 0 {
        "skipped (the log has findings)".to_owned()
    } else if !super::verify_projections::has_projections(&store_args.data_dir) {
        "skipped (no projections)".to_owned()
    } else {
        let store = open_event_store_read_only(store_args).await?;
        let compared = compare_copy(store.shared(), &store_args.data_dir).await;
        store.close().await;
        let differences = compared.context("comparing the projections with a fresh fold")?;
        if differences.is_empty() {
            "ok".to_owned()
        } else {
            for difference in differences {
                checker.find("projection", None, difference.message);
            }
            "differs".to_owned()
        }
    };
    report.events = checker.events;
    report.streams = checker.versions.len() as u64;
    report.last_position = checker.last_position;
    report.findings_total = checker.findings_total;
    report.findings = checker.findings;
    report.ok = report.findings_total == 0;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    if report.ok {
        Ok(())
    } else {
        let first = report
            .findings
            .first()
            .map(|f| f.message.clone())
            .unwrap_or_default();
        anyhow::bail!(
            "verify found {} problem{} (first: {first})",
            report.findings_total,
            if report.findings_total == 1 { "" } else { "s" }
        )
    }
}

/// Compares a copy of the data directory's projections with a fresh fold (see the module docs:
/// catching up must not write in the data directory).
async fn compare_copy(
    store: std::sync::Arc<dyn emporium_eventstore::EventStore>,
    data_dir: &Path,
) -> anyhow::Result<Vec<super::verify_projections::Difference>> {
    let copy = tempfile::tempdir().context("creating a temporary directory for the projections")?;
    let from = data_dir.join("projections");
    let to = copy.path().join("projections");
    tokio::task::block_in_place(|| copy_tree(&from, &to))
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    super::verify_projections::compare(store, copy.path()).await
}

/// Copies the directory `from` (files and subdirectories) to `to`.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn print_text(report: &Report) {
    println!("Event store: {}", report.store);
    if let (Some(segments), Some(frames), Some(bytes)) =
        (report.segments, report.frames, report.bytes)
    {
        println!("  {segments} segments, {frames} frames, {bytes} bytes");
    }
    println!(
        "  {} events in {} streams, last position {}",
        report.events, report.streams, report.last_position
    );
    if let Some(torn) = &report.torn_tail {
        println!("  note: torn tail {torn}");
    }
    let count = |kind: &str| report.findings.iter().filter(|f| f.kind == kind).count();
    for (label, kinds) in [
        ("frame checksums", &["damaged-frame"][..]),
        (
            "positions and stream versions",
            &["position", "version"][..],
        ),
        (
            "every event decodes into its stream",
            &["decode", "wrong-stream"][..],
        ),
        ("domain invariants", &["invariant"][..]),
        ("projections match a fresh fold", &["projection"][..]),
    ] {
        let n: usize = kinds.iter().map(|k| count(k)).sum();
        if kinds == ["projection"] && report.projections.starts_with("skipped") {
            println!("  --    projections: {}", report.projections);
        } else if n == 0 {
            println!("  ok    {label}");
        } else {
            println!("  FAIL  {label}: {n}");
        }
    }
    if !report.findings.is_empty() {
        println!("\nFindings:");
        for finding in &report.findings {
            println!("  [{}] {}", finding.kind, finding.message);
        }
        let hidden = report.findings_total - report.findings.len() as u64;
        if hidden > 0 {
            println!("  ... and {hidden} more");
        }
    }
}
