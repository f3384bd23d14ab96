//! `emporium demo seed`: fills a store with the demo shop (`emporium_api::demo`) through the real
//! command path, with a progress bar per phase.

use std::time::Instant;

use emporium_api::demo::{self, DemoConfig, DemoProgress};
use parking_lot::Mutex;

use super::{OpenStore, open_event_store, progress};
use crate::cli::{DemoCommand, StoreArgs};

pub async fn run(store_args: &StoreArgs, command: DemoCommand) -> anyhow::Result<()> {
    let DemoCommand::Seed(args) = command;
    let store = open_event_store(store_args, true).await?;
    let config = DemoConfig {
        products: args.products,
        orders: args.orders,
        warehouses: args.warehouses,
        seed: args.seed,
        concurrency: args.concurrency,
        only_writer: matches!(store, OpenStore::Embedded(_)),
    };
    let bars: Mutex<Option<(&'static str, indicatif::ProgressBar)>> = Mutex::new(None);
    let on_progress = |p: DemoProgress| {
        let mut current = bars.lock();
        if current.as_ref().is_none_or(|(phase, _)| *phase != p.phase) {
            if let Some((_, bar)) = current.take() {
                bar.finish();
            }
            let bar = progress(Some(p.total), p.phase);
            *current = Some((p.phase, bar));
        }
        if let Some((_, bar)) = current.as_ref() {
            bar.set_position(p.done);
        }
    };
    let started = Instant::now();
    let outcome = demo::seed(store.shared(), &config, &on_progress).await;
    if let Some((_, bar)) = bars.lock().take() {
        bar.finish();
    }
    store.close().await;
    let summary = outcome?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "Seeded {} products ({} stock receipts) and {} orders ({} refused by the domain) with {} \
         commands in {secs:.1} s; the log's head is at position {} ({:.0} events/s).",
        summary.products,
        summary.stock_receipts,
        summary.orders_placed,
        summary.orders_rejected,
        summary.commands,
        summary.head,
        summary.head as f64 / secs.max(0.001),
    );
    if summary.duplicates > 0 {
        println!(
            "{} commands had been applied by an earlier run with seed {}: written once.",
            summary.duplicates, args.seed
        );
    }
    Ok(())
}
