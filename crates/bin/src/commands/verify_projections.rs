//! `emporium verify`, projections: each read model of the data directory compared with a fresh
//! fold of the log into a temporary directory.
//!
//! Both are brought to the store's head first (opening the data directory's projections lets
//! their runners apply what they have not yet applied, as a server start would), then compared
//! row by row: catalog and stock rows by SKU, orders by id (and the open-orders-by-expiry
//! index), the search index by document count and each product's price and availability.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use emporium_eventstore::EventStore;
use emporium_projections::{ProjectionSet, ProjectionSetConfig};

/// Differing keys named per projection; beyond this they are only counted.
const KEYS_SHOWN: usize = 5;
/// How long the folds may take to reach the head.
const FOLD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A projection that differs from the fresh fold: one line naming it and its first keys.
pub struct Difference {
    pub message: String,
}

/// Whether `data_dir` has projections (a `CURRENT` pointer of any of them).
pub fn has_projections(data_dir: &Path) -> bool {
    emporium_projections::ProjectionName::ALL
        .iter()
        .any(|name| {
            data_dir
                .join("projections")
                .join(name.as_str())
                .join("CURRENT")
                .is_file()
        })
}

/// Compares the projections of `data_dir` with a fresh fold of `store`.
pub async fn compare(
    store: Arc<dyn EventStore>,
    data_dir: &Path,
) -> anyhow::Result<Vec<Difference>> {
    // Opening replaces a generation that does not open (damaged files) with an empty one: that
    // is a finding too, which the fold would otherwise hide.
    let before: Vec<(&'static str, Option<u64>)> = emporium_projections::ProjectionName::ALL
        .iter()
        .map(|name| {
            let pointer = data_dir
                .join("projections")
                .join(name.as_str())
                .join("CURRENT");
            let number = std::fs::read_to_string(pointer)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            (name.as_str(), number)
        })
        .collect();
    let tmp = tempfile::tempdir().context("creating a temporary directory for the fresh fold")?;
    let open = |dir: &Path| {
        let config = ProjectionSetConfig::new(dir);
        tokio::task::block_in_place(|| ProjectionSet::open(Arc::clone(&store), config))
    };
    let current = open(data_dir).with_context(|| {
        format!(
            "opening the projections in {} (is a server running on this data directory?)",
            data_dir.join("projections").display()
        )
    })?;
    let fresh = match open(tmp.path()) {
        Ok(fresh) => fresh,
        Err(error) => {
            tokio::task::block_in_place(|| current.close());
            return Err(error).context("opening fresh projections in a temporary directory");
        }
    };
    let mut outcome = compare_sets(&store, &current, &fresh).await;
    if let (Ok(differences), Ok(status)) = (&mut outcome, current.status().await) {
        for (s, (name, number)) in status.iter().zip(&before) {
            if let Some(number) = number
                && s.generation != *number
            {
                differences.insert(
                    0,
                    Difference {
                        message: format!(
                            "{name}: generation {number} does not open (damaged files); it was \
                             replaced by generation {} folded from the log",
                            s.generation
                        ),
                    },
                );
            }
        }
    }
    tokio::task::block_in_place(|| {
        current.close();
        fresh.close();
    });
    outcome
}

async fn compare_sets(
    store: &Arc<dyn EventStore>,
    current: &ProjectionSet,
    fresh: &ProjectionSet,
) -> anyhow::Result<Vec<Difference>> {
    let head = store.head().await.context("reading the store's head")?;
    current
        .wait_all(head, FOLD_TIMEOUT)
        .await
        .context("bringing the data directory's projections to the head")?;
    fresh
        .wait_all(head, FOLD_TIMEOUT)
        .await
        .context("folding the log into fresh projections")?;
    tokio::task::block_in_place(|| {
        let mut differences = Vec::new();
        let (a, b) = (current.catalog().current(), fresh.catalog().current());
        let keyed = |rows: Vec<emporium_projections::ProductRow>| {
            rows.into_iter().map(|r| (r.sku.clone(), r)).collect()
        };
        let catalog_a = keyed(a.model().all().context("reading the catalog")?);
        let catalog_b = keyed(b.model().all().context("reading the fresh catalog")?);
        differences.extend(diff("catalog", &catalog_a, &catalog_b));

        let (a, b) = (current.stock().current(), fresh.stock().current());
        let keyed = |rows: Vec<emporium_projections::StockRow>| {
            rows.into_iter().map(|r| (r.sku.clone(), r)).collect()
        };
        differences.extend(diff(
            "stock",
            &keyed(a.model().all().context("reading the stock levels")?),
            &keyed(b.model().all().context("reading the fresh stock levels")?),
        ));

        let (a, b) = (current.orders().current(), fresh.orders().current());
        let (orders_a, open_a) = a.model().all().context("reading the orders")?;
        let (orders_b, open_b) = b.model().all().context("reading the fresh orders")?;
        let keyed = |rows: Vec<emporium_projections::OrderRow>| {
            rows.into_iter()
                .map(|r| (r.order_id.to_string(), r))
                .collect()
        };
        differences.extend(diff("orders", &keyed(orders_a), &keyed(orders_b)));
        let keyed = |rows: Vec<emporium_projections::ExpiredOrder>| {
            rows.into_iter()
                .map(|r| (r.order_id.to_string(), r.expires_at_micros))
                .collect()
        };
        differences.extend(diff(
            "orders (open by expiry)",
            &keyed(open_a),
            &keyed(open_b),
        ));

        let (a, b) = (current.search().current(), fresh.search().current());
        let (index_a, index_b) = (a.model().index(), b.model().index());
        if index_a.num_docs() != index_b.num_docs() {
            differences.push(Difference {
                message: format!(
                    "search: {} documents, a fresh fold has {}",
                    index_a.num_docs(),
                    index_b.num_docs()
                ),
            });
        }
        let mut docs_a = BTreeMap::new();
        let mut docs_b = BTreeMap::new();
        for sku in catalog_a.keys().chain(catalog_b.keys()) {
            let doc = |search: &emporium_projections::ProductSearch| {
                search
                    .product(sku)
                    .map(|d| d.map(|d| (d.price_minor, d.currency, d.available)))
                    .with_context(|| format!("reading {sku} from the search index"))
            };
            if let Some(d) = doc(a.model())? {
                docs_a.insert(sku.clone(), d);
            }
            if let Some(d) = doc(b.model())? {
                docs_b.insert(sku.clone(), d);
            }
        }
        differences.extend(diff("search", &docs_a, &docs_b));
        Ok(differences)
    })
}

/// The keys whose rows differ between the data directory (`current`) and the fresh fold.
fn diff<T: PartialEq + Debug>(
    projection: &'static str,
    current: &BTreeMap<String, T>,
    fresh: &BTreeMap<String, T>,
) -> Option<Difference> {
    let mut keys: Vec<String> = Vec::new();
    let mut total = 0usize;
    for key in current
        .keys()
        .chain(fresh.keys().filter(|k| !current.contains_key(*k)))
    {
        let (a, b) = (current.get(key), fresh.get(key));
        if a == b {
            continue;
        }
        total += 1;
        if keys.len() < KEYS_SHOWN {
            keys.push(match (a, b) {
                (Some(_), None) => format!("{key} (not in a fresh fold)"),
                (None, Some(_)) => format!("{key} (missing)"),
                _ => key.clone(),
            });
        }
    }
    (total > 0).then(|| Difference {
        message: format!(
            "{projection}: {total} row{} differ{} from a fresh fold of the log: {}{}",
            if total == 1 { "" } else { "s" },
            if total == 1 { "s" } else { "" },
            keys.join(", "),
            if total > keys.len() { ", ..." } else { "" }
        ),
    })
}
